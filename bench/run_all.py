"""Run every benchmark in bench/ and collect their JSON lines into bench/results/<name>.json
(``<name>_quick.json`` for ``--quick`` runs, so a smoke run never replaces the full figures).

    python bench/run_all.py            # full sizes (minutes each on 2 cores; scale ~35 min; gpu_check only on a GPU)
    python bench/run_all.py --quick    # small sizes, a smoke run
    python bench/run_all.py embed index

Each benchmark compares against its own baseline measured in the same run (ratios hold on a noisy
machine) and prints one JSON line; this runner never times anything itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


# scripts in bench/ that are not benchmarks run_all can start on its own
NOT_RUN = {
    "scale_report": "turns bench/results/scale.json into docs/PERFORMANCE.md's tables (no measurement)",
    "demo_quality": "evaluates the models a `kp demo` run left (needs its lake: --lake)",
    "distill_curve": "a training study (student AUC against teacher-scored pairs), tens of minutes a point",
    "cut_rotation": "applies the cut rotation to students kept by `kp eval-labels --keep` (needs them: --run)",
    "student_ceiling": "a training diagnostic (the student distilled on the pairs it is graded on), 3-17 training minutes a run",
    "rerank_gain": "ranks keyphrases with models kept by `kp eval-labels --keep` (needs them: --keep), ~12 minutes a seed",
    "rerank_recommend": "runs `kp recommend` with and without the cross-encoder re-rank on a `make demo` lake (--lake)",
    "student_start": "writes the start encoders of two training probes (no measurement)",
    "judge_ablation": "collects `kp report` ablations under each judge and their labels vs truth (needs their lakes)",
    "lexical_baseline": "a study for docs/TRAINING.md (the lexical term on the untrained encoder, 1-5 minutes a world; "
                        "its files are bench/results/hybrid/lexical_baseline_v<features version>.json)",
    "label_ceiling": "a study for docs/TRAINING.md (no model: each simulated world's noisy labels graded by its truth; "
                     "its file is bench/results/hybrid/label_ceiling.json)",
    "served_bound": "two levers for the served score, on models kept by `kp eval-labels --keep` (needs them: --keep, "
                    "--result); its files are bench/results/hybrid/served_bound_<world>.json",
}


def discover() -> list[str]:
    """Every benchmark script in bench/: all ``*.py`` but this runner, ``_``-prefixed helpers and ``NOT_RUN``."""
    return sorted(p.stem for p in BENCH.glob("*.py")
                  if p.stem not in ("run_all", "__init__", *NOT_RUN) and not p.stem.startswith("_"))


def last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="small sizes")
    args = ap.parse_args(argv)
    names = args.names or discover()
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        if name in NOT_RUN:  # named by hand: not a benchmark this runner can start (no JSON line, own arguments)
            print(json.dumps({"bench": name, "skipped": f"not run by bench/run_all.py: {NOT_RUN[name]}; "
                                                        f"run it directly: python bench/{name}.py --help"}), flush=True)
            continue
        cmd = [sys.executable, str(BENCH / f"{name}.py")] + (["--quick"] if args.quick else [])
        print(f"== bench {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        started = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(proc.stderr[-4000:])
        result = last_json_line(proc.stdout)
        if proc.returncode != 0 or result is None:
            failed.append(name)
            print(json.dumps({"bench": name, "error": f"exit {proc.returncode}", "stdout_tail": proc.stdout[-500:]}))
            continue
        if result.get("skipped"):  # e.g. gpu_check without a GPU: nothing measured, the committed file stays
            print(json.dumps(result), flush=True)
            continue
        result.setdefault("quick", args.quick)
        result["wall_s_total"] = round(time.time() - started, 1)
        # quick runs never overwrite the full-size figures (same convention as bench/embed.py, bench/index.py);
        # a benchmark whose last line names its own "results_file" (bench/scale.py: all its lines) wrote it itself
        if not result.get("results_file"):
            (RESULTS / f"{name}{'_quick' if args.quick else ''}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result), flush=True)
    if failed:
        print(f"benchmarks failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
