"""Benchmark: the hybrid score's cost per pair as ``kp recommend`` re-scores, lexical features version 2 against
version 1 (the baseline) in the same run.

``kp recommend`` re-scores each item's top ``serve.hybrid_depth`` candidates of the cosine search with the student's
hybrid score (``keyphrase_pipeline.artifacts.hybrid_rescore``): one call of ``HybridScore.score`` per batch of items,
each item's title and category repeated against its candidate keyphrases. This builds that shape from a simulated
world's judged pairs (``--world``, its distinct items and keyphrases): ``--items`` items, each with ``--depth``
keyphrases drawn at random (seed 0) from the world's, in batches of ``--batch-items`` items; then times
``HybridScore.score`` over all of them for each version of the lexical features (``models.lexical_match``), the
module's caches emptied first (``cold``: each item's text tokenised once, as in a catalog run, where every item is
new) and again with them filled (``warm``: a second pass). ``--repeats`` rounds, versions alternating within each;
the figures are the medians with min and max, and the ratio of the versions' times paired by round (the load of the
shared machine changes between rounds more than between the two halves of one). The cosines are zeros: only the
lexical term is timed (the cosine search, the ONNX towers and the parquet writes are ``kp recommend``'s own run
stats, ``hybrid_pairs_per_s``).

The texts are **simulated** (``synthetic.synth_labels``): the listing world's titles are as long as a marketplace's
(median 137 characters), the demo world's short. Prints ONE JSON line (``bench/run_all.py`` writes it to
``bench/results/lexical_speed.json``; ``_quick.json`` for ``--quick``).

    .venv/bin/python bench/lexical_speed.py              # listing world, 4,000 items x 50 candidates, 9 rounds
    .venv/bin/python bench/lexical_speed.py --quick      # 200 items, 2 rounds: a smoke run, its figures not comparable
    .venv/bin/python bench/run_all.py lexical_speed      # the same, written to bench/results/lexical_speed.json
    .venv/bin/python bench/lexical_speed.py --doc        # docs/SERVING.md's paragraph from that file
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULT = ROOT / "bench" / "results" / "lexical_speed.json"  # written by bench/run_all.py


def rescore_pairs(world: str, n_items: int, depth: int, seed: int = 0):
    """(titles, categories, keyphrases): lists of str of ``n_items * depth`` pairs, item by item, each of ``n_items``
    distinct items of ``world`` (its judged pairs' titles and categories, the first ``n_items``; fewer when the world
    has fewer) against ``depth`` of its distinct keyphrases drawn without replacement. Raises ValueError for an unknown
    world or one with fewer than ``depth`` keyphrases."""
    from keyphrase_pipeline.synthetic.synth_labels import world_pairs

    pairs = world_pairs(world, max(6000, 3 * n_items))
    items = pairs[["title", "category"]].drop_duplicates().head(n_items)
    keyphrases = pairs["keyphrase"].drop_duplicates().to_numpy(dtype=object)
    if len(keyphrases) < depth:
        raise ValueError(f"world {world!r} has {len(keyphrases)} keyphrases, fewer than --depth {depth}")
    rng = np.random.default_rng(seed)
    titles, categories, candidates = [], [], []
    for title, category in items.itertuples(index=False):
        titles += [title] * depth
        categories += [category] * depth
        candidates += rng.choice(keyphrases, size=depth, replace=False).tolist()
    return titles, categories, candidates


def time_version(version: int, titles, categories, keyphrases, batch_pairs: int) -> dict:
    """Seconds of ``HybridScore.score`` over all pairs in batches of ``batch_pairs``, for lexical features ``version``:
    ``{"cold": s, "warm": s}``, cold after emptying the tokeniser's caches, warm right after."""
    from keyphrase_pipeline.models import lexical_match
    from keyphrase_pipeline.models.lexical_match import HybridScore

    hybrid = HybridScore(1.0, (0.5, 0.1, -0.1), features_version=version)
    cosines = np.zeros(len(titles), dtype=np.float32)
    out = {}
    for phase in ("cold", "warm"):
        if phase == "cold":  # every cache of the module (tokens, the items' and keyphrases' token sets, sizes)
            for name in dir(lexical_match):
                if hasattr(getattr(lexical_match, name), "cache_clear"):
                    getattr(lexical_match, name).cache_clear()
        t0 = time.perf_counter()
        for start in range(0, len(titles), batch_pairs):
            end = start + batch_pairs
            hybrid.score(cosines[start:end], titles[start:end], categories[start:end], keyphrases[start:end])
        out[phase] = time.perf_counter() - t0
    return out


def doc_paragraph(result: dict) -> str:
    """docs/SERVING.md's paragraph on the lexical term's cost, from a full run's ``result`` (``main``'s line)."""
    pp, ratio = result["pairs_per_s"], result["v2_over_v1_seconds"]

    def rate(v: str, phase: str) -> str:
        r = pp[v][phase]
        return f"{r['median'] / 1000:.0f}k ({r['min'] / 1000:.0f}k-{r['max'] / 1000:.0f}k)"

    minutes = {v: 50e6 / pp[v]["cold"]["median"] / 60 for v in ("v1", "v2")}
    return (f"The lexical term's cost per pair with long titles and each version of its features, in the re-score's shape\n"
            f"(`bench/lexical_speed.py`: the **simulated** {result['world']} world's texts, median title "
            f"{result['median_title_chars']} characters,\n{result['items']:,} items x {result['depth']} candidates, one "
            f"process on the 2 shared cores, {result['repeats']} rounds alternating the\nversions, median (min-max); file "
            f"`bench/results/lexical_speed.json`): version 1 {rate('v1', 'cold')} pairs/s,\nversion 2 {rate('v2', 'cold')}, "
            f"each item's text tokenised once as in a catalog run; with every text already\ntokenised (a second pass) "
            f"{rate('v1', 'warm')} and {rate('v2', 'warm')}. Version 2 (quantities written one way) takes\n"
            f"{ratio['cold']['median']}x version 1's time ({ratio['cold']['min']}-{ratio['cold']['max']}x, paired by round; "
            f"{ratio['warm']['median']}x warm): at a million items and D = 50, about "
            f"{minutes['v2']:.0f} minutes of one core\nfor the re-score against {minutes['v1']:.0f} (estimated from these "
            f"rates, not run at that size).")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 items, 2 rounds")
    ap.add_argument("--world", default="listing", help="simulated world whose texts are used (listing: long titles)")
    ap.add_argument("--items", type=int, default=None, help="items (default 4000; --quick 200)")
    ap.add_argument("--depth", type=int, default=50, help="candidates re-scored per item (serve.hybrid_depth's default)")
    ap.add_argument("--batch-items", type=int, default=256, help="items per HybridScore.score call")
    ap.add_argument("--repeats", type=int, default=None, help="rounds (default 9; --quick 2)")
    ap.add_argument("--doc", action="store_true", help="print docs/SERVING.md's paragraph from the committed file")
    args = ap.parse_args(argv)
    if args.doc:
        print(doc_paragraph(json.loads(RESULT.read_text())))
        return {}
    n_items = args.items or (200 if args.quick else 4000)
    repeats = args.repeats or (2 if args.quick else 9)
    titles, categories, keyphrases = rescore_pairs(args.world, n_items, args.depth)
    from keyphrase_pipeline.models.lexical_match import VERSIONS

    seconds = {v: {"cold": [], "warm": []} for v in VERSIONS}
    for r in range(repeats):
        for v in VERSIONS if r % 2 == 0 else VERSIONS[::-1]:  # alternate the order: neither always runs first
            for phase, s in time_version(v, titles, categories, keyphrases, args.batch_items * args.depth).items():
                seconds[v][phase].append(s)
    n = len(titles)  # pairs

    def spread(values, digits: int | None) -> dict:
        return {"median": round(float(np.median(values)), digits), "min": round(min(values), digits),
                "max": round(max(values), digits)}

    def ratios(phase: str) -> dict:
        return spread([a / b for a, b in zip(seconds[2][phase], seconds[1][phase])], 2)

    def rate(v: int, phase: str) -> dict:
        return spread([n / s for s in seconds[v][phase]], None)

    result = {"bench": "lexical_speed", "simulated": True, "world": args.world, "items": n // args.depth, "depth": args.depth,
              "pairs": n, "batch_items": args.batch_items, "repeats": repeats,
              "median_title_chars": int(np.median([len(t) for t in titles[::args.depth]])),
              "pairs_per_s": {f"v{v}": {phase: rate(v, phase) for phase in ("cold", "warm")} for v in VERSIONS},
              # paired by round (the two versions ran back to back): robust to the shared machine's load changing
              "v2_over_v1_seconds": {phase: ratios(phase) for phase in ("cold", "warm")}}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
