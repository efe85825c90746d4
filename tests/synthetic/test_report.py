"""`kp report` on the tiny world with tiny models: two label mixes, numbers consistent with the truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.synthetic import report


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("report_base") / "enc", seed=0)


def report_settings(tiny_world, base):
    return tiny_world.with_overrides(**{
        "train.base_model": base, "train.matryoshka_dims": [32, 16], "serve.dim": 16, "train.batch_size": 16,
        "train.max_seq_length": 24, "train.cross_max_length": 48, "train.learning_rate": 2e-3,
        "train.warmup_ratio": 0.0, "train.epochs": 100, "train.bi_epochs": 100, "train.evals_per_epoch": 0,
        "train.cross_max_steps": 15, "train.bi_max_steps": 15, "train.min_rows": 20,
        "train.device": "cpu", "train.eval_max_items": 40})


def test_report_two_mixes_consistent_with_truth(tiny_world, tiny_encoder, spark, tmp_path):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.models.bi_encoder import encode_items, encode_keyphrases, load_student
    from keyphrase_pipeline.synthetic.world import World, simulated_p_yes

    s = report_settings(tiny_world, tiny_encoder)
    lake = Lake.from_settings(s)
    out = tmp_path / "report"
    lake.write_run_stats("2026-10-12", "train_bi", {"version": "the-day's-own-student"})
    before_bi = json.loads(Path(lake.run_stats_path("2026-10-12", "train_bi")).read_text())
    summary = report.run(s, mixes=["ctr", "llm+ctr+kd"], kd_losses=["pearson"], out=str(out), spark=spark,
                         keep_models=True, seeds=[1, 2])
    ds = summary["ds"]
    assert ds == "2026-10-12"  # newest day of the tiny world's events
    assert summary["prepared"] == ["ctr-labels", "label", "train-cross"]
    assert registry.champion(s) is None  # the report never promotes
    # the day's train_bi figures are the day's, not the report's students'
    assert json.loads(Path(lake.run_stats_path(ds, "train_bi")).read_text()) == before_bi

    # stats for the UI, and the files it names
    stats = json.loads(Path(lake.run_stats_path(ds, "report")).read_text())
    html = Path(stats["html_path"]).read_text()
    assert "Table 2" in html and "<table>" in html and "data:image/png;base64," in html
    md = Path(stats["md_path"]).read_text()
    assert "| llm+ctr+kd |" in md and "![pass_at_k.png](plots/pass_at_k.png)" in md
    # the truth table leads; the pass-rate table says it is circular; cells are mean ± std over the 2 seeds
    assert md.index("against the truth") < md.index("circular") < md.index("| P@5 % |")
    assert " ± " in md.split("| P@5 % |")[1] and "seeds [1, 2]" in md
    assert (out / "plots" / "pass_at_k.png").stat().st_size > 1000
    # the training labels' judge against the truth: the simulated annotator of the prepared day, its table and plot
    (lab,) = summary["labels_judge"]["judges"]
    assert lab["judge"] == "simulated" and lab["pairs"] == len(pd.read_parquet(lake.path("llm_store", ds=ds)))
    assert 0.8 <= lab["agreement"] <= 0.97 and lab["auc"] > 0.8  # the iid annotator agrees 90% of the time
    assert md.index("labels' judge against the truth") < md.index("circular") and "same simulated annotator" in md
    assert (out / "plots" / "labels_judge_calibration.png").stat().st_size > 1000

    assert [r["label_mix"] for r in summary["ablation"]] == ["ctr", "llm+ctr+kd"]
    assert set(summary["ablation"][1]["tasks"]) == {"ctr", "llm", "kd", "kd_list"}  # kd includes the lists
    assert summary["kd_comparison"][0] is not None and summary["kd_comparison"][0]["kd_loss"] == "pearson"
    for r in summary["ablation"]:
        o = r["offline"]
        for k in report.PASS_KS:
            assert 0.0 <= o[f"pass@{k}"] <= 1.0
        assert 0 <= o["KP"] <= s.serve.top_k
        assert o["PR"] is None or 0.0 <= o["PR"] <= 1.0
        assert -1.0 <= r["rho_cross"] <= 1.0 and 0.0 <= r["llm"]["f1"] <= 1.0
        for b in ("tail", "head", "all"):
            t = o["truth"][b]
            for k in report.TRUTH_KS:
                assert t["items"] == 0 or (0.0 <= t[f"recall@{k}"] <= 1.0 and 0.0 <= t[f"precision@{k}"] <= 1.0)
        assert o["truth"]["tail"]["items"] > 0 and o["truth"]["head"]["items"] > 0

    # seeds: every arm trained once per seed; the arm's figures are the mean of the seeds', with their std
    arm = summary["ablation"][1]
    assert summary["seeds"] == [1, 2] and arm["seeds"] == [1, 2] and [r["seed"] for r in arm["per_seed"]] == [1, 2]
    f1s = [r["llm"]["f1"] for r in arm["per_seed"]]
    assert arm["llm"]["f1"] == pytest.approx(np.mean(f1s)) and arm["spread"]["llm"]["f1"] == pytest.approx(np.std(f1s, ddof=1))
    p5 = [r["offline"]["pass@5"] for r in arm["per_seed"]]
    assert arm["offline"]["pass@5"] == pytest.approx(np.mean(p5))
    assert arm["spread"]["offline"]["truth"]["tail"]["recall@20"] == pytest.approx(
        np.std([r["offline"]["truth"]["tail"]["recall@20"] for r in arm["per_seed"]], ddof=1))
    assert arm["per_seed"][0]["rho_cross"] != arm["per_seed"][1]["rho_cross"]  # the seed reached the training

    # one item, recomputed from scratch: embed with the saved student, rank by numpy, truth by World
    slug = report._slug("llm+ctr+kd", "pearson") + "__seed2"
    per = pd.read_parquet(out / "mixes" / slug / "per_item.parquet")
    recs = pd.read_parquet(out / "mixes" / slug / "recommendations.parquet")
    o = summary["ablation"][1]["per_seed"][1]["offline"]
    assert o["pass@10"] == pytest.approx(per["pass@10"].mean())
    assert o["truth"]["tail"]["recall@20"] == pytest.approx(per.loc[per.bucket == "tail", "recall@20"].mean())

    world = World.load(s)
    item_id = int(per.sort_values(["n_relevant", "item_id"]).iloc[-1]["item_id"])
    catalog = pd.read_parquet(lake.path("catalog", ds=ds))
    row = catalog[catalog.item_id == item_id].iloc[0]
    kps = pd.read_parquet(lake.path("keyphrases"))
    model = load_student(str(out / "_models" / slug / "model"), "cpu")
    iv = encode_items(model, [row.title], [row.category], 16)
    kv = encode_keyphrases(model, kps["text"].tolist(), 16)
    sims = (kv @ iv[0]).astype(np.float64)
    top20 = kps["keyphrase_id"].to_numpy()[np.argsort(-sims, kind="stable")[:20]]
    mine = recs[recs.item_id == item_id].sort_values("rank")
    assert len(set(top20) & set(mine["keyphrase_id"].head(20))) >= 19  # ties may swap the 20th
    truth = world.is_relevant(np.full(len(kps), item_id), kps["keyphrase_id"].to_numpy())
    relevant = set(kps["keyphrase_id"].to_numpy()[truth])
    rec20 = mine["keyphrase_id"].head(20).tolist()
    expected = len(relevant & set(rec20)) / min(20, len(relevant))
    got = float(per.loc[per.item_id == item_id, "recall@20"].iloc[0])
    assert got == pytest.approx(expected)
    p5 = simulated_p_yes(world, np.full(5, item_id), np.array(rec20[:5]), accuracy=s.judge.simulated_accuracy,
                         seed=s.synth.seed)
    assert float(per.loc[per.item_id == item_id, "pass@5"].iloc[0]) == pytest.approx(np.mean(p5 >= s.judge.threshold))


def test_a_judge_that_says_no_to_every_pair_stops_the_report_with_the_reason(tiny_world, tiny_encoder, spark, tmp_path):
    """Labels of one class (here: a threshold no P(yes) reaches) train no cross-encoder, so the ablation would
    compare students without their labels: a DataError that says why, no report written."""
    from keyphrase_pipeline.core.errors import DataError

    s = report_settings(tiny_world, tiny_encoder).with_overrides(**{"judge.threshold": 1.0})
    with pytest.raises(DataError, match="cannot train the report's students: the judge labelled 0.0%"):
        report.run(s, mixes=["ctr", "llm+ctr+kd"], kd_losses=["pearson"], out=str(tmp_path / "r"), spark=spark)
    assert not (tmp_path / "r").exists()


def test_mean_and_spread_of_nested_records():
    mean, sd = report.mean_and_spread([{"a": 1.0, "b": {"c": 2, "d": None}, "e": "x"},
                                       {"a": 3.0, "b": {"c": 4, "d": 1.0}, "e": "y"}])
    assert mean == {"a": 2.0, "b": {"c": 3.0, "d": None}, "e": "x"}
    assert sd["a"] == pytest.approx(np.sqrt(2)) and sd["b"]["c"] == pytest.approx(np.sqrt(2)) and sd["b"]["d"] is None
    assert report.mean_and_spread([{"a": 5}])[1] == {"a": 0.0}


def test_bad_mix_or_kd_loss_is_a_config_error_before_any_work(settings, tmp_path):
    with pytest.raises(ConfigError, match="seeds"):
        report.run(settings, mixes=["llm"], seeds=["one"], out=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="label mix"):
        report.run(settings, mixes=["llm+foo"], out=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="kd losses"):
        report.run(settings, mixes=["llm"], kd_losses=["kl"], out=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists() and not Path(settings.lake_root).exists()


def test_real_lake_without_world_is_refused(settings, tmp_path):
    from keyphrase_pipeline.core.lake import write_parquet_atomic

    lake = Lake.from_settings(settings)
    write_parquet_atomic(pd.DataFrame({"item_id": [1]}), lake.path("catalog", ds="2026-10-01"))
    from keyphrase_pipeline.core.errors import DataError

    with pytest.raises(DataError, match="no synthetic world"):
        report.prepare(settings)


@pytest.mark.parametrize("name", ["report_ablation_3seeds.json", "report_ablation_3seeds_llm_annotator.json",
                                  "report_ablation_3seeds_smollm2.json"])
def test_docs_report_tables_come_from_the_committed_seeded_run(name):
    """docs/REPORT.md's ablation tables are generated from the committed 3-seed reports
    (bench/results/report_ablation_3seeds*.json; the second under the LLM-like simulated annotator): every cell
    is mean ± std over the seeds."""
    repo = Path(__file__).resolve().parents[2]
    summary = json.loads((repo / "bench" / "results" / name).read_text())
    assert len(summary["seeds"]) >= 3
    for arm in summary["ablation"] + summary["kd_comparison"]:
        assert len(arm["per_seed"]) == len(summary["seeds"])
    doc = (repo / "docs" / "REPORT.md").read_text()
    for name, table in report.tables(summary).items():
        assert report._md_table(*table) in doc, name
