"""bench/run_all.py: `make bench` starts every benchmark, and only scripts that can run that way."""

from __future__ import annotations

from pathlib import Path

import pytest
from testsupport import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run_all():
    return load_bench("run_all", "bench_run_all")


def test_every_discovered_benchmark_accepts_quick_and_the_others_are_named():
    """run_all passes ``--quick`` to each script (``bench/run_all.py --quick``) and runs the full size without arguments:
    a script that cannot (a doc generator, one that needs a demo lake) must be listed in NOT_RUN with why."""
    run_all = _run_all()
    found = run_all.discover()
    assert "ctr_labels" in found and "scale" in found
    for name in found:
        text = (BENCH / f"{name}.py").read_text()
        assert '"--quick"' in text, f"bench/{name}.py has no --quick option"
        assert "required=True" not in text, f"bench/{name}.py needs an argument run_all does not pass"
    every = {p.stem for p in BENCH.glob("*.py")} - {"run_all", "__init__"}
    assert every - set(found) == set(run_all.NOT_RUN), "a script is neither run nor listed in NOT_RUN"


def test_a_skipped_benchmark_leaves_the_committed_result_alone(tmp_path, monkeypatch, capsys):
    import json
    import subprocess

    run_all = _run_all()
    results = tmp_path / "results"
    results.mkdir()
    (results / "gpu_check.json").write_text('{"committed": true}')
    monkeypatch.setattr(run_all, "RESULTS", results)
    skipped = json.dumps({"bench": "gpu_check", "skipped": "no CUDA device"})
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, skipped + "\n", ""))
    assert run_all.main(["gpu_check"]) == 0
    assert json.loads((results / "gpu_check.json").read_text()) == {"committed": True}
    assert "no CUDA device" in capsys.readouterr().out


def test_a_script_named_but_not_run_by_the_runner_is_skipped_with_its_reason(tmp_path, monkeypatch, capsys):
    """`run_all.py label_ceiling` (a study, not a benchmark: no --quick, no JSON line) is not started: a skipped line
    says why and how to run it, nothing is written, and the run does not fail."""
    import json
    import subprocess

    run_all = _run_all()
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a NOT_RUN script was started"))
    assert run_all.main(["--quick", "label_ceiling"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["bench"] == "label_ceiling" and run_all.NOT_RUN["label_ceiling"] in line["skipped"]
    assert not list(tmp_path.iterdir())
