"""bench/lexical_speed.py: the hybrid score's cost per pair in kp recommend's re-score shape, version 2 of the
lexical features against version 1 in the same run."""

from __future__ import annotations

import json
from pathlib import Path

from testsupport import load_bench

RESULT = Path(__file__).resolve().parents[2] / "bench" / "results" / "lexical_speed.json"


def test_the_pairs_are_each_items_text_against_its_candidates():
    bench = load_bench("lexical_speed", "lexical_speed")
    titles, categories, keyphrases = bench.rescore_pairs("demo", 7, 5)
    assert len(titles) == len(categories) == len(keyphrases) == 35
    for i in range(0, 35, 5):  # one item per block of depth pairs, its candidates distinct
        assert len(set(titles[i:i + 5])) == 1 and len(set(categories[i:i + 5])) == 1
        assert len(set(keyphrases[i:i + 5])) == 5
    assert len(set(zip(titles[::5], categories[::5]))) == 7  # distinct items
    assert bench.rescore_pairs("demo", 7, 5) == (titles, categories, keyphrases)  # seeded


def test_each_version_is_timed_cold_then_warm_with_its_own_tokenisation(monkeypatch):
    from keyphrase_pipeline.models import lexical_match

    bench = load_bench("lexical_speed", "lexical_speed")
    seen = []
    real = lexical_match.match_features
    monkeypatch.setattr(lexical_match, "match_features", lambda *a: seen.append(a[3]) or real(*a))
    titles, categories, keyphrases = bench.rescore_pairs("demo", 4, 5)
    junk = [f"left over {i} 15.6 inch" for i in range(300)]  # an earlier run's texts: the cold pass must not find them
    real(junk, junk, junk, 2)
    real(junk, junk, junk, 1)
    caches = [f for f in vars(lexical_match).values() if hasattr(f, "cache_info")]
    assert len(caches) >= 5 and all(f.cache_info().currsize >= 300 for f in caches)
    out = bench.time_version(1, titles, categories, keyphrases, batch_pairs=10)
    assert set(out) == {"cold", "warm"} and min(out.values()) > 0
    assert seen == [1, 1, 1, 1]  # 20 pairs in batches of 10, twice, all with version 1's features
    for f in caches:  # every cache emptied, then filled with these pairs' texts only
        assert f.cache_info().currsize < 50, f.__name__


def test_the_committed_result_is_a_full_run_with_both_versions():
    result = json.loads(RESULT.read_text())
    assert result["bench"] == "lexical_speed" and result["quick"] is False and result["simulated"] is True
    assert result["pairs"] == result["items"] * result["depth"] and result["repeats"] >= 3
    for v in ("v1", "v2"):
        for phase in ("cold", "warm"):
            r = result["pairs_per_s"][v][phase]
            assert r["min"] <= r["median"] <= r["max"]
    for phase in ("cold", "warm"):
        r = result["v2_over_v1_seconds"][phase]
        assert r["min"] <= r["median"] <= r["max"]


def test_the_docs_paragraph_is_the_committed_result():
    bench = load_bench("lexical_speed", "lexical_speed")
    doc = (Path(__file__).resolve().parents[2] / "docs" / "SERVING.md").read_text()
    assert bench.doc_paragraph(json.loads(RESULT.read_text())) in doc
