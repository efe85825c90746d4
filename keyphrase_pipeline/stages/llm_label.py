"""Stage 2b: label one shard of the day's pairs with the configured LLM judge (the fan-out unit).

The Airflow DAG maps ``run`` over the shards listed by ``kp select-pairs`` (pool ``llm``, queue ``gpu``).

* **One worker per shard.** A worker first takes the shard's lease ``llm_labels/staging/ds=D/shard=NNNNN/_LEASE``
  (``keyphrase_pipeline.labels.lease``: created with O_EXCL, heartbeat every ``judge.lease_ttl_s / 4``). A second
  worker on the same shard (an Airflow retry whose first try is still alive, a manual rerun) WAITS: when the
  holder finishes it returns the holder's ``_DONE`` stats with ``skipped``, ``judge_calls: 0`` and
  ``waited_for`` (exit 0); when the holder stops without finishing it takes the lease and judges only what is
  left; after ``judge.lease_wait_s`` it raises LeaseBusy (exit 1, retry later). A holder silent for longer
  than ``judge.lease_ttl_s`` (or whose pid is gone on this host) is taken over (``lease_taken_over`` in stats).
* **Each judged batch is written at once**, atomically, as ``llm_labels/staging/ds=D/shard=NNNNN/batch-XXXXX.parquet``;
  a ``_DONE`` marker (holding the pairs run id and the stats) closes the shard. A killed worker loses at most the
  batch in flight; a retried or restarted shard skips every pair already labelled (staged for this day, in the
  store, or quarantined for this day), so a pair is never paid for twice and a rerun of a finished shard calls
  the judge 0 times. When a request fails for good mid-batch, the answers already received are staged first.
* **Nothing answered is lost with a killed worker.** For judges that journal their requests (the openai judge:
  ``journals_requests``) on a local lake, every request of the batch in flight is written, fsynced, to
  ``llm_labels/staging/ds=D/shard=NNNNN/_JOURNAL.jsonl`` before it is sent and again when its answer arrives;
  the journal is removed once the batch is staged. The next worker on the shard (holding the lease) first
  stages the answers the journal holds (``recovered_from_journal.answers``) and quarantines the requests that
  were sent but never answered with reason ``in_flight_at_crash`` (``recovered_from_journal.in_flight``): the
  endpoint may have answered (and billed) them, so they are not asked again that day (selected again another
  day); they do not count toward ``judge.max_unparsable_share``. So a retry never pays twice, even for the
  batch in flight (measured by ``make cluster-e2e FAULTS=1``). Local judges (vLLM in process, transformers,
  simulated) and remote lakes keep the batch granularity.
* **Requests that time out are counted as possibly paid.** A request that timed out or whose connection dropped
  after it was sent may have been computed and billed: the stats say ``possibly_paid`` (and a warning per batch).
  The openai judge sends a pair again after one at most ``judge.max_timeout_retries`` times (its timeout grows
  meanwhile); then the pair is quarantined with reason ``timed_out`` (``TIMED_OUT_REASON``: not asked again that
  day, whatever the number of tries; ``timed_out_pairs``), the batch's answers are staged and the try fails
  (JudgeUnavailable, exit 1).
* **Unusable answers are quarantined, not fatal.** A pair whose answer holds no yes/no token (or is malformed,
  or a score outside [0, 1]) goes to ``quarantine/llm_labels/ds=D/shard=NNNNN/batch-XXXXX.parquet`` with
  ``reason`` and ``raw_answer``; the shard finishes. Only when more than ``judge.max_unparsable_share`` of the
  shard's pairs are quarantined does the shard fail (DataError, exit 3, not done; it stops paying as soon as the
  share is certain to be exceeded); the quarantined answers stay, so a retry does not pay for them again.
* **Blank text is never sent.** A pair whose title or keyphrase is blank under the text rule
  (``keyphrase_pipeline.models.text.clean``: whitespace, zero-width, BOM or bidi characters only) is skipped and
  counted (``skipped_blank``); ``kp select-pairs`` quarantines such rows already.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, ds_str, is_local, local_path, read_parquet, write_parquet_file_atomic
from keyphrase_pipeline.labels.judges.base import TIMED_OUT_REASON, Verdicts
from keyphrase_pipeline.labels.lease import Lease
from keyphrase_pipeline.labels.store import (
    ensure_pair_keys_current,
    pair_keys,
    quarantine_files,
    read_done,
    read_manifest,
    read_quarantine,
    read_store_keys,
    staged_keys,
    staging_files,
    text_hash,
    to_label_frame,
    write_quarantine,
)
from keyphrase_pipeline.models.text import is_blank

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

IN_FLIGHT_REASON = "in_flight_at_crash"  # quarantine reason: sent by a worker that died before the answer came
# quarantine reasons that say nothing of the judge's answers (maybe billed, never read): they do not count toward
# judge.max_unparsable_share
NOT_AN_ANSWER = frozenset({IN_FLIGHT_REASON, TIMED_OUT_REASON})


class AnswerJournal:
    """The write-ahead record of one batch's judge requests (``layout.shard_journal_path``, local lakes): JSON
    lines ``{"k": pair_key, "e": "sent" | "answered" | "unusable" | "failed", ...}`` (``p`` for answered,
    ``reason``/``raw`` for unusable), each flushed and fsynced before the call returns. Thread-safe (the judge
    calls it from its request threads). ``keys[i]`` is the pair_key of request ``i``."""

    def __init__(self, path: str, keys):
        self.path = local_path(path)
        self.keys = list(keys)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def _write(self, rec: dict) -> None:
        with self._lock:
            self._f.write(json.dumps(rec) + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())

    def sent(self, i: int) -> None:
        self._write({"k": self.keys[i], "e": "sent"})

    def answered(self, i: int, p_yes: float) -> None:
        self._write({"k": self.keys[i], "e": "answered", "p": float(p_yes)})

    def unusable(self, i: int, reason: str, raw: str) -> None:
        self._write({"k": self.keys[i], "e": "unusable", "reason": str(reason), "raw": str(raw)[:1000]})

    def failed(self, i: int) -> None:
        self._write({"k": self.keys[i], "e": "failed"})

    def discard(self) -> None:
        """Close and remove the journal (its batch is staged)."""
        self._f.close()
        self.path.unlink(missing_ok=True)


def read_journal(path: str) -> dict[str, dict]:
    """pair_key -> the last event the journal at ``path`` holds for it (empty when there is none). A torn last
    line (the process died while writing it) is ignored."""
    p = local_path(path)
    if not p.exists():
        return {}
    out: dict[str, dict] = {}
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            out[str(rec["k"])] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _journals(judge, lake: Lake) -> bool:
    return bool(getattr(judge, "journals_requests", False)) and is_local(lake.path("llm_staging"))


def _recover_journal(settings: Settings, lake: Lake, ds: str, shard: int, pairs: pd.DataFrame, judge) -> dict | None:
    """Stage what a dead worker's journal holds for this shard: answered pairs as a batch, unusable answers and
    requests sent but never answered (``IN_FLIGHT_REASON``) into the quarantine; then remove the journal.
    Pairs already staged or quarantined are left alone. Returns ``{"answers", "unusable", "in_flight",
    "timed_out"}`` or None when there was no journal."""

    path = layout.shard_journal_path(lake, ds, shard)
    if not is_local(path) or not local_path(path).exists():
        return None
    events = read_journal(path)
    keyed = pairs.assign(pair_key=pair_keys(pairs, judge.model, judge.prompt_version)).drop_duplicates("pair_key")
    keep = set(keyed["pair_key"]) - already_labelled(lake, ds, keyed["pair_key"]) - quarantined_keys(lake, ds)
    events = {k: e for k, e in events.items() if k in keep and e.get("e") in ("sent", "answered", "unusable")}
    batch = keyed[keyed["pair_key"].isin(events)].reset_index(drop=True)
    p = np.full(len(batch), np.nan)
    unusable: dict[int, tuple[str, str]] = {}
    for i, key in enumerate(batch["pair_key"]):
        e = events[key]
        if e["e"] == "answered":
            p[i] = float(e.get("p", np.nan))
        elif e["e"] == "unusable":
            unusable[i] = (str(e.get("reason", "unusable")), str(e.get("raw", "")))
        else:
            unusable[i] = (IN_FLIGHT_REASON, "")
    n = {"answers": 0, "unusable": 0, "in_flight": 0, "timed_out": 0}
    if len(batch):
        rows, bad = _split_verdicts(settings, judge, batch, Verdicts(p, unusable))
        index = _next_batch_index(lake, ds, shard)
        if len(rows):
            write_parquet_file_atomic(to_label_frame(rows), f"{layout.staging_dir(lake, ds, shard)}/{layout.batch_file_name(index)}")
        if len(bad):
            write_quarantine(lake, ds, shard, index, bad)
        n = {"answers": int(len(rows)), "in_flight": int((bad["reason"] == IN_FLIGHT_REASON).sum()),
             "timed_out": int((bad["reason"] == TIMED_OUT_REASON).sum()),
             "unusable": int((~bad["reason"].isin(NOT_AN_ANSWER)).sum())}
    local_path(path).unlink(missing_ok=True)
    log.warning("ds=%s %s: a dead worker's journal recovered: %d answer(s) staged, %d unusable and %d sent but never "
                "answered (%s) quarantined, so none is paid for again", ds, layout.shard_dir_name(shard),
                n["answers"], n["unusable"], n["in_flight"], IN_FLIGHT_REASON)
    return n


def quarantined_keys(lake: Lake, ds, shard: int | None = None) -> set[str]:
    """pair_keys quarantined for the day (one shard, or all): answered but unusable, not to be asked again today."""
    return set(read_quarantine(lake, ds, shard, cols=["pair_key"])["pair_key"].tolist())


def already_labelled(lake: Lake, ds, among) -> set[str]:
    """Which of ``among`` (pair_keys) were labelled before: staged for this day (any shard, any run), or in
    the store (any day)."""
    among = set(among)
    staged = staged_keys(lake, ds) & among
    return staged | read_store_keys(lake, among=among - staged)


def _next_batch_index(lake: Lake, ds, shard: int) -> int:
    files = staging_files(lake, ds, shard) + quarantine_files(lake, ds, shard)
    if not files:
        return 0
    return max(layout.batch_index(f) for f in files) + 1


def _done_stats(lake: Lake, ds: str, shard: int, manifest: dict, quiet: bool = False) -> dict | None:
    """The stats of a shard already done for this pairs run (nothing to judge), else None."""
    done = read_done(lake, ds, shard)
    if not (done and done.get("run_id") == manifest["run_id"]):
        return None
    if not quiet:
        log.info("ds=%s %s already done (%s pairs): nothing to do", ds, layout.shard_dir_name(shard), done.get("pairs"))
    return {"ds": ds, "shard": shard, "skipped": True, "judged": 0, "judge_calls": 0, "possibly_paid": 0, "batches": 0,
            "pairs": done.get("pairs", 0), "already_labelled": done.get("pairs", 0),
            "quarantined": 0, "quarantined_in_shard": done.get("quarantined_in_shard", 0)}


def _pairs_to_judge(lake: Lake, ds: str, shard: int, pairs: pd.DataFrame,
                    judge) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """(the shard's pairs keyed for this judge, those to judge now, how many are quarantined already, how many
    have a blank title or keyphrase under ``models.text.clean`` and are never sent to the judge)."""
    keys = pair_keys(pairs, judge.model, judge.prompt_version)
    mismatched = int((keys != pairs["pair_key"]).sum())
    if mismatched:
        log.warning("%d pairs were selected for another judge model/prompt; keyed for %s/%s instead",
                    mismatched, judge.model, judge.prompt_version)
    pairs = pairs.assign(pair_key=keys).drop_duplicates("pair_key")
    seen = already_labelled(lake, ds, pairs["pair_key"])
    q = read_quarantine(lake, ds, cols=["pair_key", "reason"])
    quarantined = (set(q["pair_key"]) & set(pairs["pair_key"])) - seen
    not_answers = set(q.loc[q["reason"].isin(NOT_AN_ANSWER), "pair_key"]) & quarantined  # in flight, timed out
    todo = pairs[~pairs["pair_key"].isin(seen | quarantined)].reset_index(drop=True)
    blank = np.array([is_blank(t) or is_blank(k) for t, k in zip(todo["title"], todo["keyphrase"], strict=True)],
                     dtype=bool)
    if blank.any():  # never pay the judge for a pair it cannot read (select-pairs quarantines these already)
        log.warning("ds=%s %s: %d pair(s) with a blank title or keyphrase not sent to the judge (item_id %s)", ds,
                    layout.shard_dir_name(shard), int(blank.sum()), todo.loc[blank, "item_id"].head(10).tolist())
        todo = todo[~blank].reset_index(drop=True)
    log.info("ds=%s %s: %d pairs, %d already labelled, %d quarantined before, %d blank, %d to judge with %r", ds,
             layout.shard_dir_name(shard), len(pairs), len(seen), len(quarantined), int(blank.sum()), len(todo), judge)
    return pairs, todo, len(quarantined - not_answers), int(blank.sum())


def _verdicts(judge, batch: pd.DataFrame, journal: AnswerJournal | None = None):
    """The judge's ``Verdicts`` for ``batch`` (judges without ``verdicts`` are asked with ``score``); ``journal``
    goes to judges that journal their requests."""

    if journal is not None:
        return judge.verdicts(batch, journal=journal)
    if hasattr(judge, "verdicts"):
        return judge.verdicts(batch)
    return Verdicts.of(judge.score(batch))


def _split_verdicts(settings: Settings, judge, batch: pd.DataFrame, v) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(label rows of the pairs answered, quarantine rows of the pairs answered unusably). Pairs left without an
    answer by ``v.error`` are in neither. Raises DataError when the judge returned the wrong number of scores."""
    p = np.asarray(v.p_yes, dtype=np.float64)
    if p.shape != (len(batch),):
        raise DataError(f"judge {judge.name} returned {p.shape} scores for {len(batch)} pairs")
    unusable = dict(v.unusable)
    answered = np.zeros(len(batch), dtype=bool)
    for i, x in enumerate(p):
        if i in unusable:
            continue
        if np.isfinite(x) and 0.0 <= x <= 1.0:
            answered[i] = True
        elif not (np.isnan(x) and v.error is not None):  # NaN under an error: not answered, asked again later
            unusable[i] = ("invalid_score", repr(float(x)))
    now = pd.Timestamp.now(tz="UTC")
    good = batch[answered]
    rows = pd.DataFrame({
        "item_id": good["item_id"].to_numpy(),
        "keyphrase_id": good["keyphrase_id"].to_numpy(),
        "text_hash": [text_hash(t, c, k) for t, c, k in
                      zip(good["title"], good["category"], good["keyphrase"], strict=True)],
        "pair_key": good["pair_key"].to_numpy(),
        "title": good["title"].to_numpy(),
        "category": good["category"].to_numpy(),
        "keyphrase": good["keyphrase"].to_numpy(),
        "source": good["source"].to_numpy(),
        "p_yes": p[answered],
        "label": (p[answered] >= settings.judge.threshold).astype("int32"),
        "judge": judge.name,
        "judge_model": judge.model,
        "prompt_version": judge.prompt_version,
        "labelled_at": now,
    })
    idx = sorted(unusable)
    bad = batch.iloc[idx]
    quarantine = pd.DataFrame({
        "item_id": bad["item_id"].to_numpy(), "keyphrase_id": bad["keyphrase_id"].to_numpy(),
        "pair_key": bad["pair_key"].to_numpy(), "title": bad["title"].to_numpy(),
        "category": bad["category"].to_numpy(), "keyphrase": bad["keyphrase"].to_numpy(),
        "source": bad["source"].to_numpy(), "judge": judge.name, "judge_model": judge.model,
        "prompt_version": judge.prompt_version, "reason": [unusable[i][0] for i in idx],
        "raw_answer": [str(unusable[i][1]) for i in idx], "quarantined_at": now,
    })
    return rows, quarantine


def _too_many_unusable(ds: str, shard: int, n_quarantined: int, n_pairs: int, max_share: float, lake: Lake,
                       by_reason: dict) -> DataError:
    return DataError(
        f"ds={ds} {layout.shard_dir_name(shard)}: {n_quarantined} of {n_pairs} pairs "
        f"({n_quarantined / max(n_pairs, 1):.1%}) got no usable judge answer {by_reason}, above "
        f"judge.max_unparsable_share={max_share:.1%}; the answers are kept in {layout.label_quarantine_dir(lake, ds, shard)} "
        "(a retry does not pay for them again). Fix the judge or endpoint and delete that directory to ask again, "
        "or raise judge.max_unparsable_share")


def _judge_batches(settings: Settings, lake: Lake, ds: str, shard: int, judge, todo: pd.DataFrame, lease: Lease,
                   n_pairs: int, quarantined_before: int) -> dict:
    """Judge ``todo`` in batches, each written to staging (and its unusable answers to the quarantine) at once;
    returns the counts (``unusable``: the quarantined answers that count toward ``judge.max_unparsable_share``,
    ``possibly_paid``: requests that timed out or dropped after sending, ``timed_out``: pairs given up after
    ``judge.max_timeout_retries``, quarantined too). Raises the judge's error after keeping what a failing batch
    answered (and quarantining its timed-out pairs), DataError as soon as the shard's quarantined share is
    certain to exceed ``judge.max_unparsable_share``, LeaseLost when another worker took the shard over."""
    # pairs per verdicts call, each call's answers staged before the next: a judge that batches a whole shard
    # itself (the vllm backend) says so with pairs_per_call (None = all of them)
    chunk = getattr(judge, "pairs_per_call", settings.judge.batch_size * settings.judge.concurrency) or max(len(todo), 1)
    max_share = settings.judge.max_unparsable_share
    allowed = math.floor(max_share * n_pairs + 1e-9)
    index = _next_batch_index(lake, ds, shard)
    sdir = layout.staging_dir(lake, ds, shard)
    n = {"judged": 0, "batches": 0, "calls": 0, "yes": 0, "quarantined": 0, "unusable": 0, "by_reason": {},
         "possibly_paid": 0, "timed_out": 0}
    if quarantined_before > allowed:  # a retry of a shard that already failed this way: pay nothing more
        raise _too_many_unusable(ds, shard, quarantined_before, n_pairs, max_share, lake, n["by_reason"])
    for start in range(0, len(todo), chunk):
        batch = todo.iloc[start:start + chunk]
        lease.check()
        n["calls"] += 1
        journal = (AnswerJournal(layout.shard_journal_path(lake, ds, shard), batch["pair_key"])
                   if _journals(judge, lake) else None)
        v = _verdicts(judge, batch, journal)
        rows, bad = _split_verdicts(settings, judge, batch, v)
        if len(rows):
            write_parquet_file_atomic(to_label_frame(rows), f"{sdir}/{layout.batch_file_name(index)}")
        if len(bad):
            path = write_quarantine(lake, ds, shard, index, bad)
            log.warning("ds=%s %s: %d pair(s) without a usable answer quarantined in %s (%s)", ds,
                        layout.shard_dir_name(shard), len(bad), path, sorted(set(bad["reason"])))
        if journal is not None:
            journal.discard()  # the batch is staged: its journal is no longer needed
        if len(rows) or len(bad):
            index += 1
            n["batches"] += 1
        n["judged"] += len(rows)
        n["yes"] += int(rows["label"].sum()) if len(rows) else 0
        n["quarantined"] += len(bad)
        timed_out = int((bad["reason"] == TIMED_OUT_REASON).sum()) if len(bad) else 0
        n["timed_out"] += timed_out
        n["unusable"] += int((~bad["reason"].isin(NOT_AN_ANSWER)).sum()) if len(bad) else 0
        for r in bad["reason"]:
            n["by_reason"][r] = n["by_reason"].get(r, 0) + 1
        paid = int(getattr(v, "possibly_paid", 0))
        n["possibly_paid"] += paid
        if paid:
            log.warning("ds=%s %s: %d request(s) timed out or dropped after being sent, possibly paid (the endpoint may "
                        "have computed and billed them; %d in this shard so far); %d pair(s) given up after "
                        "judge.max_timeout_retries=%s and quarantined as %s (not asked again today)", ds,
                        layout.shard_dir_name(shard), paid, n["possibly_paid"], timed_out,
                        settings.judge.max_timeout_retries, TIMED_OUT_REASON)
        log.info("ds=%s %s: %d/%d judged", ds, layout.shard_dir_name(shard), n["judged"] + n["quarantined"], len(todo))
        if v.error is not None:
            raise v.error
        if quarantined_before + n["unusable"] > allowed:
            raise _too_many_unusable(ds, shard, quarantined_before + n["unusable"], n_pairs, max_share, lake,
                                     n["by_reason"])
    return n


def _holder(settings: Settings) -> dict:

    ctx = {k.lower().removeprefix("airflow_ctx_"): v for k, v in os.environ.items()
           if k in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_TASK_ID", "AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_TRY_NUMBER")}
    return {"airflow": ctx} if ctx else {}


def run(settings: Settings, ds, shard: int, judge=None) -> dict:
    """Label one shard; returns stats (pairs, skipped, judged, batches, yes_rate, judge_calls, possibly_paid,
    timed_out_pairs, quarantined, quarantined_in_shard, quarantined_by_reason, lease_taken_over, waited_for).

    Raises ConfigError (exit 2): the judge is misconfigured; DataError (exit 3): no pairs for the day, the judge
    returned a wrong number of scores, or too many unusable answers (the batches already judged are kept);
    LeaseBusy / LeaseLost / JudgeUnavailable (exit 1): retry later."""
    lake = Lake.from_settings(settings)
    ds = ds_str(ds)
    shard = int(shard)
    manifest = read_manifest(lake, ds)
    if shard not in manifest["shards"]:
        raise DataError(f"ds={ds} has no shard {shard}; shards are {manifest['shards']}")
    done = _done_stats(lake, ds, shard, manifest)
    if done:
        return done
    ensure_pair_keys_current(settings)

    lease = Lease(layout.shard_lease_path(lake, ds, shard), settings.judge.lease_ttl_s,
                  what=f"ds={ds} {layout.shard_dir_name(shard)}", extra=_holder(settings))
    t_wait = time.monotonic()
    if not lease.acquire(settings.judge.lease_wait_s,
                         stop_waiting=lambda: _done_stats(lake, ds, shard, manifest, quiet=True) is not None):
        stats = _done_stats(lake, ds, shard, manifest)
        stats.update(waited_for=(lease.last_seen or {}).get("holder"), waited_s=round(time.monotonic() - t_wait, 2))
        log.info("ds=%s %s was labelled by %s while this worker waited: nothing paid", ds,
                 layout.shard_dir_name(shard), stats["waited_for"])
        return stats
    own_judge = judge is None
    try:
        done = _done_stats(lake, ds, shard, manifest)  # finished by another worker just before we got the lease
        if done:
            if lease.last_seen:
                done.update(waited_for=lease.last_seen.get("holder"), waited_s=round(time.monotonic() - t_wait, 2))
            return done
        pairs = read_parquet(layout.pairs_dir(lake, ds, shard), contract="pairs")
        if judge is None:
            from keyphrase_pipeline.labels.judges import get_judge

            judge = get_judge(settings)
        if judge.prompt_version != settings.judge.prompt_version:
            raise ConfigError(f"judge prompt {judge.prompt_version} differs from judge.prompt_version {settings.judge.prompt_version}")
        recovered = _recover_journal(settings, lake, ds, shard, pairs, judge)
        pairs, todo, q_before, skipped_blank = _pairs_to_judge(lake, ds, shard, pairs, judge)
        t0 = time.monotonic()
        n = _judge_batches(settings, lake, ds, shard, judge, todo, lease, len(pairs), q_before)
        q_total = q_before + n["unusable"]
        seconds = time.monotonic() - t0
        judged = n["judged"]
        stats = {"ds": ds, "shard": shard, "skipped": False, "pairs": int(len(pairs)),
                 "already_labelled": int(len(pairs) - len(todo) - q_before - skipped_blank),
                 "skipped_blank": skipped_blank, "judged": judged, "batches": n["batches"],
                 "judge_calls": n["calls"], "possibly_paid": n["possibly_paid"], "timed_out_pairs": n["timed_out"],
                 "yes_rate": round(n["yes"] / judged, 4) if judged else None,
                 "quarantined": n["quarantined"], "quarantined_in_shard": q_total,
                 "quarantined_by_reason": n["by_reason"],
                 "judge": judge.name, "judge_model": judge.model, "prompt_version": judge.prompt_version,
                 "judge_device": getattr(judge, "runs_on", "here"),
                 "pairs_per_s": round(judged / seconds, 2) if judged and seconds > 0 else None,
                 "run_id": manifest["run_id"], "recovered_from_journal": recovered,
                 "lease_taken_over": ({k: lease.taken_over.get(k) for k in ("holder", "reason")}
                                      if lease.taken_over else None)}
        lease.check()
        lake.write_json(layout.done_marker(lake, ds, shard), stats)
        return stats
    finally:
        lease.release()
        if own_judge and judge is not None:
            judge.close()


def run_all(settings: Settings, ds, judge=None) -> dict:
    """Label every shard of the day in this process (one judge loaded once)."""
    lake = Lake.from_settings(settings)
    manifest = read_manifest(lake, ds)
    shards = manifest["shards"]
    pending = [sh for sh in shards if (read_done(lake, ds, sh) or {}).get("run_id") != manifest["run_id"]]
    own = judge is None
    if own and pending:  # load a model only when there is something to judge
        from keyphrase_pipeline.labels.judges import get_judge

        judge = get_judge(settings)
    results = []
    try:
        for shard in shards:
            results.append(run(settings, ds, shard, judge=judge))
    finally:
        if own and judge is not None:
            judge.close()
    return {"ds": ds_str(ds), "shards": len(shards), "judged": sum(r["judged"] for r in results),
            "judge_calls": sum(r["judge_calls"] for r in results),
            "possibly_paid": sum(r.get("possibly_paid", 0) for r in results),
            "quarantined": sum(r.get("quarantined", 0) for r in results),
            "skipped_shards": sum(1 for r in results if r["skipped"])}


def add_arguments(parser) -> None:
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    g = parser.add_mutually_exclusive_group(required=True)
    g.add_argument("--shard", type=int, help="label this shard")
    g.add_argument("--all", action="store_true", help="label every shard of the day in this process")


def main(settings: Settings, args) -> int:

    stats = run_all(settings, args.ds) if args.all else run(settings, args.ds, args.shard)
    print(json.dumps(stats, default=str))
    return 0
