"""bench/rerank_gain.py: the two-stage ranking it measures and the metrics it grades with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from testsupport import load_bench

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return load_bench("rerank_gain", "rerank_gain_bench")


def test_rerank_orders_the_first_stages_top_by_the_second_and_keeps_the_rest_below(bench):
    first = np.array([[0.9, 0.8, 0.7, 0.0, 0.1]])       # retrieval: candidates 0, 1, 2 are its top 3, then 4, then 3
    second = np.array([[0.1, 0.2, 0.9, 1.0, 0.5]])      # the re-ranker would put 3 first, but it was not retrieved
    order = np.argsort(-bench.rerank(first, second, depth=3), axis=1, kind="stable")[0].tolist()
    assert order == [2, 1, 0, 4, 3]                      # the top 3 re-ordered; the rest in retrieval order below
    assert np.argsort(-bench.rerank(first, second, depth=5), axis=1)[0].tolist() == [3, 2, 4, 1, 0]  # all: 2nd stage
    one = bench.rerank(first, second, depth=1)
    assert one[0, 0] > 1.0 and one[0, 1:].tolist() == first[0, 1:].tolist()   # only the top 1 was lifted
    logits = np.array([[-7.0, -9.0, 3.0, 0.0, 0.0]])    # a re-ranker of any range still lands above every retrieval score
    assert np.argsort(-bench.rerank(first * 50, logits, depth=3), axis=1, kind="stable")[0].tolist() == [2, 0, 1, 4, 3]


@pytest.mark.parametrize("depth,k", [(20, 20), (40, 20), (5, 20), (200, 20)])
def test_the_measured_two_stage_ranking_is_the_one_kp_recommend_serves(bench, depth, k):
    """The bench's ``rerank`` on dense score matrices and the package's ``topk.rerank_top`` on the student's search
    frame (what ``kp recommend`` runs with serve.rerank_depth) serve the same top k, so the figures the bench
    measured are those of the built path (distinct keyphrases, as the bench's candidates are)."""
    import pandas as pd

    from keyphrase_pipeline.models.topk import rerank_top

    rng = np.random.default_rng(depth)
    first, second = rng.random((30, 300)), rng.random((30, 300))
    want = np.argsort(-bench.rerank(first, second, depth), axis=1, kind="stable")[:, :k]
    searched = np.argsort(-first, axis=1, kind="stable")[:, :max(k, depth)]  # what search_batch returns, rank order
    n = searched.shape[1]
    recs = pd.DataFrame({"item_id": np.repeat(np.arange(30), n), "rank": np.tile(np.arange(1, n + 1), 30).astype(np.int32),
                         "keyphrase_id": searched.reshape(-1), "keyphrase": "", "score": np.float32(0)})
    got = rerank_top(recs, np.take_along_axis(second, searched, axis=1).reshape(-1), depth, k)
    assert got.groupby("item_id")["keyphrase_id"].apply(list).tolist() == want.tolist()


def test_rerank_refuses_a_depth_below_one_and_shapes_that_differ(bench):
    with pytest.raises(ValueError, match="depth"):
        bench.rerank(np.zeros((1, 3)), np.zeros((1, 3)), depth=0)
    with pytest.raises(ValueError, match="shape"):
        bench.rerank(np.zeros((1, 3)), np.zeros((1, 4)), depth=2)


def test_rank_metrics_grade_the_order_against_the_truth(bench):
    truth = np.zeros((2, 25), dtype=bool)
    truth[0, [0, 1]] = True           # item 0: two relevant, ranked 1st and 3rd
    truth[1, [24]] = True             # item 1: one relevant, ranked last
    scores = np.tile(-np.arange(25, dtype=float), (2, 1))   # candidate j ranks j-th
    scores[0, 1] = -2.5                                    # item 0: order 0, 2, 1, 3, ...
    m = bench.rank_metrics(truth, scores, k=20)
    assert m["p@1"] == pytest.approx((1 + 0) / 2)
    assert m["p@5"] == pytest.approx((2 / 5 + 0) / 2)
    assert m["p@20"] == pytest.approx((2 / 20 + 0) / 2)
    assert m["recall@20"] == pytest.approx((1.0 + 0.0) / 2)
    assert bench.rank_metrics(truth, scores, k=1)["recall@1"] == pytest.approx((1.0 + 0.0) / 2)  # of min(K, relevant)
    with pytest.raises(ValueError, match="shape"):
        bench.rank_metrics(truth, scores[:, :3], k=20)
    with pytest.raises(ValueError, match="k must be"):
        bench.rank_metrics(truth, scores, k=0)


def test_held_out_items_skips_seen_titles_and_items_with_nothing_to_find(bench):
    titles = np.array(["seen", "a", "b", "c", "d"], dtype=object)
    truth = {0: [True, True], 1: [False, False], 2: [False, True], 3: [True, False], 4: [True, True]}
    rng = np.random.default_rng(0)
    order = [int(i) for i in np.random.default_rng(0).permutation(5)]
    chosen, rel = bench.held_out_items(titles, {"seen"}, lambda i: np.array(truth[i]), 10, rng)
    assert chosen == [i for i in order if i in (2, 3, 4)]       # never 0 (its title is half A's) nor 1 (no relevant)
    assert rel.tolist() == [truth[i] for i in chosen]
    first_two, _ = bench.held_out_items(titles, {"seen"}, lambda i: np.array(truth[i]), 2, np.random.default_rng(0))
    assert first_two == chosen[:2]
    with pytest.raises(ValueError, match="no item"):
        bench.held_out_items(titles, {"seen", "a", "b", "c", "d"}, lambda i: np.array(truth[i]), 3, rng)


def _result(seed: int, student_p20: float) -> dict:
    rankings = ("zero_shot", "rerank@20", "rerank@40", "rerank@100", "rerank@200", "oracle@200", "zero_shot_oracle@200")
    metrics = {m: {"p@1": 0.5, "p@5": 0.4, "p@10": 0.3, "p@20": 0.2, "recall@20": 0.25} for m in rankings}
    metrics["student"] = {"p@1": 0.5, "p@5": 0.4, "p@10": 0.3, "p@20": student_p20, "recall@20": 0.25}
    return {"world": "attr", "top_k": 20, "items": 500, "keyphrases": 18542, "seed": seed, "metrics": metrics}


def test_markdown_table_gives_each_ranking_its_mean_and_spread_over_seeds(bench):
    table = bench.markdown_table([_result(1, 0.2), _result(2, 0.3)])
    lines = table.splitlines()
    assert lines[0].startswith("| ranking | teacher pairs per item | p@1 |") and len(lines) == 2 + len(bench.ROWS)
    student = next(line for line in lines if line.startswith("| the student as served"))
    assert "| 0.250 ± 0.071 |" in student                    # p@20: mean 0.25, sample std 0.0707
    assert next(line for line in lines if "top 100, re-ordered" in line).split("|")[2].strip() == "100"
    with pytest.raises(ValueError, match="one world"):
        bench.markdown_table([_result(1, 0.2), {**_result(2, 0.2), "items": 400}])
    with pytest.raises(ValueError, match="one world"):
        bench.markdown_table([])


def test_the_rerank_table_in_the_doc_is_the_committed_runs(bench):
    """docs/TRAINING.md's re-rank table is its three result files (one a training seed, the same items and
    candidates), each grading the models that seed's ``kp eval-labels`` run kept: the models' AUC on half B, which
    the diagnostic measures again, is the run's, and the run's settings are the recipe's (attr, seed 1's file in the
    checkpoint table)."""
    results = sorted(REPO.glob("bench/results/rerank/attr_s*.json"))
    runs = [json.loads(f.read_text()) for f in results]
    assert [r["seed"] for r in runs] == [1, 2, 3] and all(r["simulated"] is True for r in runs)
    recipe = json.loads((REPO / "bench/results/distill_sweep/attr_last_e1_s1.json").read_text())
    for r in runs:
        kept = json.loads((REPO / f"bench/results/rerank/attr_eval_labels_s{r['seed']}.json").read_text())
        assert kept["config"] == recipe["config"] and kept["split"] == recipe["split"]
        (per_seed,) = kept["per_seed"]
        assert per_seed["seed"] == r["seed"]
        assert r["half_b_auc"] == {m: round(per_seed["metrics"][m]["auc"], 4) for m in ("cross", "student")}
    assert runs[0]["half_b_auc"]["cross"] == round(recipe["per_seed"][0]["metrics"]["cross"]["auc"], 4)
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    start, end = "<!-- rerank table -->\n", "\n<!-- /rerank table -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == bench.markdown_table(runs)
    prose = " ".join(doc[doc.index(end):doc.index("### The recipe's time at")].split())

    def gains(base: str, better: str, col: str, fmt: str) -> str:   # the per-seed range the prose quotes
        d = [r["metrics"][better][col] - r["metrics"][base][col] for r in runs]
        return f"+{min(d):{fmt}} to +{max(d):{fmt}}"

    assert f"({gains('student', 'rerank@20', 'p@5', '.2f')} on each seed)" in prose
    assert f"({gains('student', 'rerank@200', 'p@20', '.3f')} on each seed, more than" in prose
    assert f"the zero-shot encoder, {gains('zero_shot', 'student', 'p@20', '.3f')})" in prose
    assert f"({gains('student', 'rerank@200', 'recall@20', '.3f')})" in prose
    p1 = [f"{r['metrics']['rerank@200']['p@1'] - r['metrics']['student']['p@1']:+.3f}" for r in runs]
    assert f"it changes by {p1[0]}, {p1[1]} and {p1[2]} on the three seeds" in prose
    rate, secs = sorted(r["teacher_pairs_per_second"] for r in runs), sorted(r["teacher_seconds"] for r in runs)
    assert f"the teacher scored {rate[0]:.0f}-{rate[-1]:.0f} pairs/s" in prose
    assert f"100,000 pairs in {secs[0]:.0f}-{secs[-1]:.0f} s" in prose and all(r["teacher_pairs"] == 100_000 for r in runs)
    hours = 1e8 / (sum(rate) / len(rate)) / 3600
    assert "is 10^8 pairs, about 105 hours" in prose and round(hours / 5) * 5 == 105
    auc = [(r["half_b_auc"]["cross"], r["half_b_auc"]["student"]) for r in runs]
    gap = sorted(c - s for c, s in auc)
    assert f"{gap[0]:.3f}-{gap[-1]:.3f} AUC above their students" in prose
    kept_metrics = [json.loads((REPO / f"bench/results/rerank/attr_eval_labels_s{s}.json").read_text())["per_seed"][0]["metrics"]
            for s in (1, 2, 3)]
    zero = {round(m["zero_shot"]["auc"], 3) for m in kept_metrics}
    assert zero == {0.747} and "over the zero-shot encoder's 0.747 (384-d" in prose
    for who, quoted in (("student", "the students are"), ("cross", "the teachers")):
        g = sorted(m[who]["auc"] - m["zero_shot"]["auc"] for m in kept_metrics)
        assert f"{quoted} +{g[0]:.3f} to +{g[-1]:.3f}" in prose, who
    mean = {m: np.mean([r["metrics"][m]["p@20"] for r in runs]) for m in ("rerank@20", "rerank@40", "rerank@100", "rerank@200")}
    assert (f"precision@20 gains +{mean['rerank@40'] - mean['rerank@20']:.3f} from depth 20 to 40, "
            f"+{mean['rerank@100'] - mean['rerank@40']:.3f} from 40 to 100 and "
            f"+{mean['rerank@200'] - mean['rerank@100']:.3f} from 100 to 200") in prose
    wrong_first = sorted(round(100 * (1 - r["metrics"]["student"]["p@1"])) for r in runs)
    assert f"first on {wrong_first[-1]}% of items, the others on {wrong_first[0]}-{wrong_first[1]}%" in prose


@pytest.mark.parametrize("items", ["0", "-1"])
def test_main_refuses_fewer_than_one_item_before_any_work(bench, items, tmp_path, capsys):
    for seed in ("cross-1", "student-1"):
        (tmp_path / seed).mkdir()
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--keep", str(tmp_path), "--items", items, "--out", str(tmp_path / "out.json")])
    assert exit_.value.code == 2 and "--items must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_main_names_the_command_that_makes_a_missing_seeds_models(bench, tmp_path, capsys):
    (tmp_path / "cross-1").mkdir()
    (tmp_path / "student-1").mkdir()
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--keep", str(tmp_path), "--seed", "2", "--pairs", "800", "--out", str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "cross-2 is not there" in err
    assert f"kp eval-labels --world attr --pairs 800 --seeds 2 --keep {tmp_path} first" in err
