"""Label adjudication: the day's pairs where the judge and the cross-encoder disagree most, and a person's answers
stored as human labels that training reads over the judge's labels."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from distill_helpers import DS, trained_world
from testsupport import make_settings


def _lake(tmp_path, **review):
    w = trained_world(make_settings)
    root = tmp_path / "lake"
    shutil.copytree(w["lake"], root)
    _hex_pair_keys(root)
    return w, make_settings(root, train=w["settings"].train.model_dump(), serve={"dim": 16},
                            review={"adjudication_pairs": 4, **review})


def _hex_pair_keys(root):
    """The test store's pair keys made hex, as the real store writes them (``labels.store.pair_key``: a sha1)."""
    import hashlib

    import pyarrow.parquet as pq

    for f in (root / "llm_labels" / "store").rglob("*.parquet"):
        t = pq.read_table(f)
        keys = [hashlib.sha1(k.encode()).hexdigest() for k in t.column("pair_key").to_pylist()]
        i = t.schema.get_field_index("pair_key")
        import pyarrow as pa

        pq.write_table(t.set_column(i, t.schema.field(i), pa.array(keys, type=t.schema.field(i).type)), f)


def test_pick_orders_by_disagreement_and_leaves_reviewed_pairs_out(tmp_path):
    import numpy as np

    from keyphrase_pipeline.commands import adjudicate
    from keyphrase_pipeline.labels import reviews

    w, s = _lake(tmp_path)
    picked = adjudicate.pick(s, DS)
    pairs = picked["pairs"]
    assert len(pairs) == 4 and picked["cross_version"] and picked["why"] == ""
    assert picked["scanned"] == picked["day_pairs"] > 4
    d = [p["disagreement"] for p in pairs]
    assert d == sorted(d, reverse=True)
    assert all(abs(p["disagreement"] - abs(p["p_judge"] - p["p_cross"])) < 1e-3 for p in pairs)
    # the largest disagreement of the day: nothing scanned is further apart than the first offered pair
    day = reviews._store_day(s, DS)
    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.labels.kd_pairs import teacher_scores

    all_d = np.abs(day["p_yes"].to_numpy() - teacher_scores(s, layout.model_dir(s, picked["cross_version"], "cross"), day))
    assert d[0] == pytest.approx(float(all_d.max()), abs=1e-3)
    # a reviewed pair is not offered again
    reviews.append(s, DS, pairs[0]["pair_key"], "agree", "ana")
    again = adjudicate.pick(s, DS)
    assert pairs[0]["pair_key"] not in {p["pair_key"] for p in again["pairs"]}
    # a seeded sample of a larger day: the same pairs on a rerun
    small = s.with_overrides(**{"review.adjudication_scan": 10})
    a, b = adjudicate.pick(small, DS), adjudicate.pick(small, DS)
    assert a["scanned"] == 10 and a["pairs"] == b["pairs"]


def test_pick_offers_nothing_and_says_why(tmp_path):
    from keyphrase_pipeline.commands import adjudicate

    w, s = _lake(tmp_path)
    assert "no judged pairs" in adjudicate.pick(s, "2026-01-01")["why"]
    assert adjudicate.pick(s, DS, n=0)["why"] == "review.adjudication_pairs is 0"
    (tmp_path / "lake" / "registry" / "CROSS_LATEST").unlink()
    out = adjudicate.pick(s, DS)
    assert out["pairs"] == [] and "no cross-encoder" in out["why"]


def test_answers_become_human_labels_in_training(tmp_path):
    from keyphrase_pipeline.commands import adjudicate
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.labels import reviews
    from keyphrase_pipeline.labels.training_data import load_training_data

    w, s = _lake(tmp_path)
    pairs = adjudicate.pick(s, DS)["pairs"]
    before = load_training_data(s, DS, need_ctr=False, need_sr=False)
    assert before.snapshot["human_labels"] == {"applied": 0, "changed": 0}
    flip, keep, skip = pairs[0], pairs[1], pairs[2]
    answers = {flip["pair_key"]: "not relevant" if flip["llm_label"] else "relevant",
               keep["pair_key"]: "relevant" if keep["llm_label"] else "not relevant",
               skip["pair_key"]: "skip"}
    at = dt.datetime(2026, 10, 11, 9, 30, tzinfo=dt.UTC)
    reads = []
    day_by_file = reviews._store_day_by_file

    def counted(*a, **kw):
        reads.append(a)
        return day_by_file(*a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reviews, "_store_day_by_file", counted)
        out = adjudicate.record(s, DS, pairs, answers, "ana", at)
    assert (out["recorded"], out["agree"], out["disagree"], out["skipped"]) == (2, 1, 1, 2)
    assert len(reads) == 1  # the store day is read once for every answer, not once per verdict
    stored = reviews.read(s)
    assert len(stored) == 2 and set(stored["reviewer"]) == {"ana"}
    assert {str(t) for t in stored["reviewed_at"]} == {"2026-10-11 09:30:00"}
    # the same answer recorded again (a re-run task) writes the same files, not copies
    adjudicate.record(s, DS, pairs, answers, "ana", at)
    assert len(reviews.read(s)) == 2
    after = load_training_data(s, DS, need_ctr=False, need_sr=False)
    assert after.snapshot["human_labels"] == {"applied": 2, "changed": 1}
    llm = after.llm.set_index("pair_key")
    assert int(llm.loc[flip["pair_key"], "label"]) == 1 - flip["llm_label"]
    assert float(llm.loc[flip["pair_key"], "p"]) == float(1 - flip["llm_label"])
    assert int(llm.loc[keep["pair_key"], "label"]) == keep["llm_label"]
    assert int(llm.loc[skip["pair_key"], "label"]) == skip["llm_label"]
    with pytest.raises(ConfigError, match="not offered"):
        adjudicate.record(s, DS, pairs, {"ffff": "relevant"}, "ana", at)
    with pytest.raises(ConfigError, match="one of"):
        adjudicate.record(s, DS, pairs, {flip["pair_key"]: "maybe"}, "ana", at)
    with pytest.raises(ConfigError, match="reviewer"):
        adjudicate.record(s, DS, pairs, answers, " ", at)


def test_cli_lists_then_records(tmp_path, monkeypatch, capsys):
    import json

    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings, settings_env
    from keyphrase_pipeline.labels import reviews

    w, s = _lake(tmp_path)
    for k, v in settings_env(s).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        assert cli.main(["adjudicate", "--ds", DS, "--pairs", "2"]) == 0
        listed = json.loads(capsys.readouterr().out)
        key = listed["pairs"][0]["pair_key"]
        assert cli.main(["adjudicate", "--ds", DS, "--answer", f"{key}=not_relevant", "--reviewer", "bo"]) == 0
        assert json.loads(capsys.readouterr().out)["recorded"] == 1
        assert reviews.read(s)["pair_key"].tolist() == [key]
        assert cli.main(["adjudicate", "--ds", DS, "--answer", "nokey", "--reviewer", "bo"]) == 2
    finally:
        get_settings.cache_clear()
