"""Issue 27: a rerun never rewrites a committed model version in place.

Re-running ``train_bi`` for a finished day (``airflow tasks clear train.train_bi``) arrives at the same version id;
before, it replaced the champion's directory: promotion.json and the ONNX export were deleted and the retrained
weights served without passing the gate. Now the committed version is reused, and a re-evaluation keeps the
earlier decision in the record."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "jobs"))
from distill_helpers import DS, tiny_settings, trained_world  # noqa: E402
from testsupport import make_settings  # noqa: E402

from keyphrase_pipeline.core import layout  # noqa: E402


def _snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in sorted(directory.rglob("*")) if p.is_file()}


def test_rerun_of_a_promoted_students_day_reuses_it(tmp_path):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.stages import evaluate, train_bi, train_cross

    w = trained_world(make_settings)
    lake = tmp_path / "lake"
    shutil.copytree(w["lake"], lake)
    s = tiny_settings(make_settings, lake, w["base"], bi_max_steps=3, cross_max_steps=3)
    cross = train_cross.run(s, DS)
    first = train_bi.run(s, DS)
    assert not first.get("reused")
    verdict = evaluate.run(s, DS, candidate=first["version"])
    assert verdict["promoted"] and registry.champion(s) == first["version"]
    vdir = Path(layout.registry_version_dir(s, first["version"]))
    onnx = Path(layout.onnx_dir(s, first["version"]))
    onnx.mkdir()
    (onnx / "export.json").write_text("{}")  # stands for a verified export (kp export writes it)
    before = _snapshot(vdir)
    promotion = json.loads((vdir / "promotion.json").read_text())

    again = train_bi.run(s, DS)  # the cleared task
    assert again["version"] == first["version"]
    assert _snapshot(vdir) == before  # not a byte rewritten: weights, promotion.json, the export
    assert json.loads((vdir / "promotion.json").read_text()) == promotion
    assert again["reused"] is True and "the champion" in again["why"] and "exported" in again["why"]
    assert registry.champion(s) == first["version"]
    assert train_cross.run(s, DS)["reused"] is True and registry.latest_cross(s) == cross["version"]

    re_eval = evaluate.run(s, DS, candidate=first["version"])  # a cleared evaluate keeps the first decision
    record = json.loads((vdir / "promotion.json").read_text())
    assert re_eval["reason"] == "already the champion"
    assert record["earlier"][0]["reason"] == promotion["reason"] and record["earlier"][0]["promoted"] is True


def test_a_cleared_older_day_never_moves_the_champion_or_the_teacher_backwards(tmp_path):
    """Re-running evaluate (or train_cross) of an older day after a later day's model took over: the champion and
    CROSS_LATEST stay on the later day's versions (before: the older student, equally good, was promoted again and
    the older cross-encoder became CROSS_LATEST)."""
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.stages import evaluate, train_bi, train_cross

    w = trained_world(make_settings)
    lake = tmp_path / "lake"
    shutil.copytree(w["lake"], lake)
    s = tiny_settings(make_settings, lake, w["base"], bi_max_steps=3, cross_max_steps=3)
    cross = train_cross.run(s, DS)
    old = train_bi.run(s, DS)
    assert evaluate.run(s, DS, candidate=old["version"])["promoted"]
    later = "2026-10-12"  # a later day's versions: copies of the same models (equally good on the gate)
    new_student, new_cross = f"{later}-0000beef", f"{later}-0000cafe"
    shutil.copytree(layout.registry_version_dir(s, old["version"]), layout.registry_version_dir(s, new_student))
    cfg = Path(layout.version_file(layout.registry_version_dir(s, new_student), "train_config"))
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "ds": later}))
    registry.set_champion(s, new_student, "day 2")
    shutil.copytree(layout.registry_version_dir(s, cross["version"], "cross"),
                    layout.registry_version_dir(s, new_cross, "cross"))
    registry.set_latest_cross(s, new_cross)

    again = evaluate.run(s, DS, candidate=old["version"])  # `airflow tasks clear train.evaluate` of the older day
    assert registry.champion(s) == new_student
    assert again["promoted"] is False and "earlier day" in again["reason"]
    assert train_cross.run(s, DS)["reused"] is True
    assert registry.latest_cross(s) == new_cross


def test_the_day_rule_ignores_names_that_are_not_dated():
    from keyphrase_pipeline.stages.evaluate import _earlier_day

    assert _earlier_day("2026-10-10", "2026-10-12") and not _earlier_day("2026-10-12", "2026-10-10")
    assert not _earlier_day("2026-10-10", "baseline")  # a hand-made champion: the ordinary gate decides
    assert not _earlier_day("2026-10-10", "2026-10-10")
