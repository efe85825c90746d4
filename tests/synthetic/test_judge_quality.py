"""The judge against the synthetic truth (keyphrase_pipeline.synthetic.judge_quality, `kp judge-quality`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.synthetic import judge_quality as jq

DS = "2026-11-01"


def test_calibration_bins_and_ece_by_hand():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 1.0])
    y = np.array([False, False, True, False, True, True])
    bins, ece = jq.calibration_bins(p, y, bins=10)
    assert [(b["lo"], b["pairs"], b["relevant_share"]) for b in bins] == [(0.0, 2, 0.0), (0.5, 1, 1.0), (0.9, 3, 0.6667)]
    assert bins[2]["mean_p_yes"] == pytest.approx((0.95 + 0.95 + 1.0) / 3, abs=1e-4)  # 1.0 falls in the last bin
    want = (2 * 0.05 + 1 * 0.45 + 3 * abs((0.95 + 0.95 + 1.0) / 3 - 2 / 3)) / 6
    assert ece == pytest.approx(want)
    # a judge whose P(yes) is the relevant share of its bin is calibrated
    assert jq.calibration_bins(np.array([0.25] * 4), np.array([True, False, False, False]), bins=4)[1] == 0.0
    with pytest.raises(ValueError):
        jq.calibration_bins(p, y[:3])


def test_judge_metrics_of_a_timid_judge_and_a_perfect_one():
    y = np.array([True, False] * 50)
    timid = jq.judge_metrics(np.where(y, 0.3, 0.2), y, threshold=0.5)  # ranks perfectly, never says yes
    assert timid["auc"] == 1.0 and timid["yes_rate"] == 0.0 and timid["precision"] is None
    assert timid["agreement"] == 0.5 and timid["recall"] == 0.0 and timid["relevant_share"] == 0.5
    assert timid["ece"] == pytest.approx(0.45)  # (|0.3 - 1| + |0.2 - 0|) / 2: P(yes) against the shares 1 and 0
    sure = jq.judge_metrics(np.where(y, 0.9, 0.1), y, threshold=0.5)
    assert sure["agreement"] == 1.0 and sure["precision"] == 1.0 and sure["recall"] == 1.0
    assert jq.judge_metrics(np.full(4, 0.7), np.zeros(4, bool), 0.5)["auc"] is None  # one class: no AUC


def _store(settings, world, rows: pd.DataFrame, ds: str, judge: str, model: str):
    from keyphrase_pipeline.labels.store import write_label_table

    n = len(rows)
    df = rows.assign(text_hash=[f"h{judge}{ds}{i}" for i in range(n)], pair_key=[f"k{judge}{ds}{i}" for i in range(n)],
                     title="t", category="c", keyphrase="k", source="test", judge=judge, judge_model=model,
                     prompt_version="v1", labelled_at=pd.Timestamp("2026-11-01"))
    df["label"] = (df["p_yes"] >= 0.5).astype("int32")
    write_label_table(df, Lake.from_settings(settings).path("llm_store", ds=ds))


def test_labels_vs_truth_per_judge_on_a_synthetic_lake(tiny_world, tmp_path):
    from keyphrase_pipeline.synthetic.world import World, simulated_p_yes

    world = World.load(tiny_world)
    rng = np.random.default_rng(0)
    items = rng.choice(world.items["item_id"].to_numpy(), 600)
    kps = rng.choice(world.keyphrases["keyphrase_id"].to_numpy(), 600)
    # half of the pairs truly relevant, so both classes are there
    rel = world.relevant_keyphrases(items[:300])
    kps[:300] = [rng.choice(rel[int(i)]) if len(rel[int(i)]) else k for i, k in zip(items[:300], kps[:300])]
    truth = world.is_relevant(items, kps)
    p_sim = simulated_p_yes(world, items, kps, accuracy=0.9, seed=1)
    _store(tiny_world, world, pd.DataFrame({"item_id": items[:400], "keyphrase_id": kps[:400], "p_yes": p_sim[:400]}),
           DS, "simulated", "simulated-annotator-v1")
    timid = np.where(truth[400:], 0.3, 0.2)  # a weak real LLM's shape: never a yes, ranks well
    _store(tiny_world, world, pd.DataFrame({"item_id": np.r_[items[400:], -1], "keyphrase_id": np.r_[kps[400:], 5],
                                            "p_yes": np.r_[timid, 0.9]}), "2026-11-02", "openai", "smollm2-135m")
    out = jq.labels_vs_truth(tiny_world)
    by = {j["judge_model"]: j for j in out["judges"]}
    assert out["skipped_pairs"] == 1 and [j["judge_model"] for j in out["judges"]][0] == "simulated-annotator-v1"
    sim, llm = by["simulated-annotator-v1"], by["smollm2-135m"]
    assert sim["pairs"] == 400 and 0.85 <= sim["agreement"] <= 0.95 and sim["auc"] > 0.8
    assert llm["pairs"] == 200 and llm["yes_rate"] == 0.0 and llm["auc"] == 1.0 and llm["stored_yes_rate"] == 0.0
    assert sim["stored_yes_rate"] == pytest.approx((p_sim[:400] >= 0.5).mean(), abs=1e-4)
    assert llm["agreement"] == pytest.approx(1 - truth[400:].mean(), abs=1e-4)
    assert list(sim["per_day"]) == [DS] and list(llm["per_day"]) == ["2026-11-02"]
    assert [j["judge"] for j in jq.labels_vs_truth(tiny_world, ds=DS)["judges"]] == ["simulated"]  # --ds cuts days
    png = jq.calibration_plot(out, tmp_path / "plots" / "cal.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_and_refusals(tiny_world, tmp_path, capsys, monkeypatch):
    from testsupport import make_settings

    from keyphrase_pipeline.cli import main

    with pytest.raises(DataError, match="no labels"):
        jq.labels_vs_truth(tiny_world)
    with pytest.raises(DataError, match="no synthetic world"):
        jq.labels_vs_truth(make_settings(tmp_path / "plain"))  # a real platform's lake
    from keyphrase_pipeline.synthetic.world import World

    world = World.load(tiny_world)
    ids = world.items["item_id"].to_numpy()[:20]
    _store(tiny_world, world, pd.DataFrame({"item_id": ids, "keyphrase_id": world.keyphrases["keyphrase_id"].to_numpy()[:20],
                                            "p_yes": np.linspace(0, 1, 20)}), DS, "simulated", "m")
    from keyphrase_pipeline.core.settings import get_settings

    monkeypatch.setenv("KP_LAKE_ROOT", str(tiny_world.lake_root))
    get_settings.cache_clear()  # an earlier test's settings may be cached
    try:
        assert main(["judge-quality", "--out", str(tmp_path / "q.json"), "--plot", str(tmp_path / "q.png")]) == 0
    finally:
        get_settings.cache_clear()
    printed = json.loads(capsys.readouterr().out)
    for bad in (["--bins", "0"], ["--plot", str(tmp_path / "q.txt")]):  # refused before any work (exit 2)
        get_settings.cache_clear()
        assert main(["judge-quality", *bad]) == 2
    get_settings.cache_clear()
    assert not (tmp_path / "q.txt").exists()
    assert printed["judges"][0]["pairs"] == 20 and json.loads((tmp_path / "q.json").read_text()) == printed
    assert (tmp_path / "q.png").exists()
