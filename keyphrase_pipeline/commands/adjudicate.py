"""Label adjudication: the judged pairs of a day where the LLM judge and the cross-encoder disagree most, put to a
person; the person's verdicts become human labels.

* ``pick``: the label store day's pairs scored by the newest cross-encoder (``registry/CROSS_LATEST``), ordered by
  ``|P_judge(yes) - P_cross(relevant)|``, largest first, pairs a person already reviewed left out. At most
  ``review.adjudication_scan`` pairs of the day are scored (a seeded sample of a larger day), so the task's cost
  does not grow with the day's budget.
* ``record``: each answer ("relevant", "not relevant"; "skip" leaves the pair alone) is stored as a verdict in the
  label review store (``labels.reviews.append``: agree when the person's label is the judge's, disagree otherwise)
  with who answered and when. Training reads the newest verdict per pair over the judge's label
  (``labels.training_data.apply_human_labels``): one path for the page's reviews and these.

The DAG's ``review`` group asks through an Airflow human-in-the-loop entry form (``orchestration.reviews``);
``kp adjudicate --ds D`` lists the same pairs and ``--answer PAIR_KEY=relevant|not_relevant --reviewer NAME``
records answers by hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, ds_str
from keyphrase_pipeline.labels import reviews

if TYPE_CHECKING:
    import datetime as dt

    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

RELEVANT, NOT_RELEVANT, SKIP = "relevant", "not relevant", "skip"
ANSWERS = (RELEVANT, NOT_RELEVANT, SKIP)
PAIR_COLUMNS = ["pair_key", "title", "category", "keyphrase", "llm_label", "p_judge", "p_cross", "disagreement"]


def pick(settings: Settings, ds, n: int | None = None) -> dict:
    """The ``n`` (default ``review.adjudication_pairs``) judged pairs of label store day ``ds`` on which the judge and
    the cross-encoder disagree most.

    Returns ``{"ds", "pairs": [{pair_key, title, category, keyphrase, llm_label (0/1), p_judge, p_cross,
    disagreement (|p_judge - p_cross|, 0-1)}], "scanned": pairs scored, "day_pairs": pairs judged that day,
    "cross_version", "why": why no pair is offered, or ""}``, pairs largest disagreement first (ties by
    ``pair_key``). No pair is offered (``why`` says which) when ``n`` is 0, the store has no day ``ds`` (labelling
    skipped), or there is no cross-encoder yet. The day is read file by file: an unreadable file is left out and
    named (``unreadable``). Raises ConfigError (exit 2) when ``ds`` is not a date or the cross-encoder's directory
    is not a model."""
    from keyphrase_pipeline.labels.kd_pairs import teacher_scores

    ds = ds_str(ds)
    n = settings.review.adjudication_pairs if n is None else int(n)
    out = {"ds": ds, "pairs": [], "scanned": 0, "day_pairs": 0, "cross_version": None, "why": ""}
    if n <= 0:
        out["why"] = "review.adjudication_pairs is 0"
        return out
    lake = Lake.from_settings(settings)
    if ds not in lake.partitions("llm_store"):
        out["why"] = f"no judged pairs for ds={ds} in the label store (labelling skipped or nothing new)"
        return out
    cross = registry.latest_cross(settings)
    if not cross or not registry.exists(settings, cross, "cross"):
        out["why"] = "no cross-encoder yet (the first training day trains one)"
        return out
    day, unreadable = reviews._store_day_by_file(settings, ds)
    if unreadable:  # the readable files' pairs are still offered; the others are named
        log.warning("adjudication ds=%s: %d label store file(s) left out: %s", ds, len(unreadable),
                    "; ".join(unreadable[:3]))
        out["unreadable"] = unreadable
    if day is None:
        out["why"] = f"no readable label store file for ds={ds}"
        return out
    day = day.sort_values("pair_key", kind="mergesort").reset_index(drop=True)
    out["day_pairs"], out["cross_version"] = int(len(day)), cross
    done = set(reviews.human_labels(settings)["text_hash"])  # the texts a person already labelled, under any key
    day = day[~day["text_hash"].isin(done)].reset_index(drop=True)
    scan = settings.review.adjudication_scan
    if len(day) > scan:  # a seeded sample: the same pairs on a rerun of the day
        rng = np.random.default_rng(int(hashlib.sha1(f"kp-adjudicate:{ds}".encode()).hexdigest()[:8], 16))
        day = day.iloc[np.sort(rng.permutation(len(day))[:scan])].reset_index(drop=True)
    if not len(day):
        out["why"] = "every judged pair of the day was already reviewed"
        return out
    p_cross = teacher_scores(settings, layout.model_dir(settings, cross, "cross"), day).astype(float)
    p_judge = day["p_yes"].astype(float).to_numpy()
    frame = day.assign(llm_label=day["label"].astype(int), p_judge=p_judge, p_cross=p_cross,
                       disagreement=np.abs(p_judge - p_cross))
    frame = frame.sort_values(["disagreement", "pair_key"], ascending=[False, True], kind="mergesort").head(n)
    out["scanned"] = int(len(day))
    texts = ("pair_key", "title", "category", "keyphrase")
    out["pairs"] = [{**{k: str(row[k]) for k in texts}, "llm_label": int(row["llm_label"]),
                     **{k: round(float(row[k]), 4) for k in ("p_judge", "p_cross", "disagreement")}}
                    for row in frame[PAIR_COLUMNS].to_dict("records")]
    log.info("adjudication ds=%s: %d pair(s) offered of %d scanned (cross-encoder %s), largest disagreement %.3f",
             ds, len(out["pairs"]), out["scanned"], cross, out["pairs"][0]["disagreement"] if out["pairs"] else 0.0)
    return out


def body(picked: dict, link: str | None = None) -> str:
    """The adjudication request as Markdown (the Airflow form's body): one numbered line per pair, the judge's and
    the cross-encoder's view, and what each answer does."""
    lines = [f"The LLM judge and the cross-encoder disagree most on these {len(picked['pairs'])} pair(s) judged for "
             f"ds={picked['ds']} (cross-encoder {picked['cross_version']}). Is the keyphrase relevant to the item? "
             "Your answer becomes the pair's label in training (a human label); **skip** leaves the judge's label.", ""]
    for i, p in enumerate(picked["pairs"], 1):
        judge = "relevant" if p["llm_label"] else "not relevant"
        lines.append(f"{i}. **{p['keyphrase']}** for *{p['title']}* ({p['category']}): judge says {judge} "
                     f"(P {p['p_judge']:.2f}), cross-encoder P {p['p_cross']:.2f}")
    if link:
        lines += ["", f"The day on the Keyphrases page: {link}"]
    return "\n".join(lines)


def answer_id(ds: str, pair_key: str, reviewer: str, at: str) -> str:
    """A verdict id derived from the answer (hex): recording the same answer twice writes the same file."""
    return hashlib.sha1(f"kp-adjudication:{ds}:{pair_key}:{reviewer}:{at}".encode()).hexdigest()[:32]


def record(settings: Settings, ds, pairs: list[dict], answers: dict[str, str], reviewer: str,
           at: dt.datetime) -> dict:
    """Store a person's answers on offered ``pairs`` as verdicts (``labels.reviews.append``).

    ``answers``: ``{pair_key: "relevant" | "not relevant" | "skip"}`` (pairs not in ``answers``: skipped);
    ``reviewer``: who answered; ``at``: when (timezone-aware). A re-run with the same answer rewrites the same
    files (``answer_id``). Returns ``{"recorded", "agree", "disagree", "skipped", "reviewer", "verdicts": [..]}``.
    Raises ConfigError (exit 2) for an answer not in ``ANSWERS``, a pair that was not offered, or no reviewer;
    DataError (exit 3) when an answered pair is no longer in the label store day (checked for every pair before
    anything is written)."""
    ds = ds_str(ds)
    by_key = {p["pair_key"]: p for p in pairs}
    unknown = sorted(set(answers) - set(by_key))
    if unknown:
        raise ConfigError(f"answers for pairs that were not offered for ds={ds}: {unknown[:5]}")
    bad = {k: v for k, v in answers.items() if v not in ANSWERS}
    if bad:
        raise ConfigError(f"answers must be one of {ANSWERS}, got {bad}")
    if not reviewer or not str(reviewer).strip():
        raise ConfigError("an adjudication needs the reviewer's name")
    answered = [k for k in sorted(by_key) if answers.get(k, SKIP) != SKIP]
    day, unreadable = None, []
    if answered:  # every answered pair is checked before any verdict is written: all or nothing; read once
        day, unreadable = reviews._store_day_by_file(settings, ds)
        gone = sorted(set(answered) - set(day["pair_key"] if day is not None else ()))
        if gone:
            raise DataError(f"{len(gone)} answered pair(s) are not among the readable label store files of ds={ds} "
                            f"({gone[:3]}{'; unreadable: ' + '; '.join(unreadable[:3]) if unreadable else ''}): "
                            "nothing recorded")
    out = {"recorded": 0, "agree": 0, "disagree": 0, "skipped": 0, "reviewer": str(reviewer), "verdicts": []}
    stamp = at.isoformat()
    for key in sorted(by_key):
        said = answers.get(key, SKIP)
        if said == SKIP:
            out["skipped"] += 1
            continue
        verdict = "agree" if int(said == RELEVANT) == int(by_key[key]["llm_label"]) else "disagree"
        rec = reviews.append(settings, ds, key, verdict, str(reviewer), now=at,
                             review_id=answer_id(ds, key, str(reviewer), stamp), store_day=(day, unreadable))
        out["recorded"] += 1
        out[verdict] += 1
        out["verdicts"].append({"pair_key": key, "answer": said, "verdict": verdict, "review_id": rec["review_id"]})
    log.info("adjudication ds=%s by %s: %d verdict(s) stored as human labels (%d agree with the judge, %d not), "
             "%d skipped", ds, reviewer, out["recorded"], out["agree"], out["disagree"], out["skipped"])
    return out


def add_arguments(parser) -> None:
    """``kp adjudicate`` options (argparse)."""
    parser.add_argument("--ds", required=True, help="label store day (YYYY-MM-DD)")
    parser.add_argument("--pairs", type=int, default=None, choices=range(0, 51), metavar="N",
                        help="pairs to offer, 0-50 (default review.adjudication_pairs; answer with the same N)")
    parser.add_argument("--answer", action="append", default=[], metavar="PAIR_KEY=relevant|not_relevant|skip",
                        help="record an answer on an offered pair (repeatable); without it the pairs are listed")
    parser.add_argument("--reviewer", default=None, help="who answered (required with --answer)")


def main(settings: Settings, args) -> int:
    """``kp adjudicate``: without ``--answer``, ``pick`` as indented JSON; with it, ``record`` the answers (now, UTC)
    and print its result as one JSON line. Returns 0. ConfigError (exit 2) for a malformed ``--answer``; the errors
    of ``pick`` and ``record``."""
    import datetime as dt

    picked = pick(settings, args.ds, args.pairs)
    if not args.answer:
        print(json.dumps(picked, indent=2))
        return 0
    answers = {}
    for a in args.answer:
        key, sep, said = a.partition("=")
        if not sep:
            raise ConfigError(f"--answer {a!r}: write PAIR_KEY=relevant, PAIR_KEY=not_relevant or PAIR_KEY=skip")
        key, said = key.strip(), said.strip().lower().replace("_", " ")
        if key in answers and answers[key] != said:
            raise ConfigError(f"--answer gives pair {key} two answers ({answers[key]!r} and {said!r}): give one")
        answers[key] = said
    print(json.dumps(record(settings, args.ds, picked["pairs"], answers, args.reviewer or "",
                            dt.datetime.now(dt.UTC))))
    return 0
