"""Issue 27: what serving shows never goes backwards by accident.

An older day published over a newer one (a cleared or backfilled day), a rollback that lands on the
known-bad version after pruning, and a promotion between export and publish."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "jobs"))
from serve_helpers import DS, ready, serve_model, serve_ready  # noqa: E402,F401

from keyphrase_pipeline.artifacts import serving  # noqa: E402
from keyphrase_pipeline.commands import rollback
from keyphrase_pipeline.core import layout  # noqa: E402
from keyphrase_pipeline.core.errors import DataError  # noqa: E402
from keyphrase_pipeline.core.lake import Lake  # noqa: E402
from keyphrase_pipeline.stages import publish

pytestmark = pytest.mark.spark

D2 = "2026-10-06"


def _copy_day(settings, src: str, dst: str) -> None:
    """Give day ``dst`` the index build and recommendations of ``src`` (the serving chain's outputs)."""
    lake = Lake.from_settings(settings)
    shutil.copytree(layout.index_build_dir(settings, src), layout.index_build_dir(settings, dst))
    shutil.copytree(lake.path("recommendations", ds=src), lake.path("recommendations", ds=dst))


def test_an_older_day_never_replaces_a_newer_live_one(ready):
    _copy_day(ready, DS, D2)
    first_d1 = publish.run(ready, DS)["version"]
    live = publish.run(ready, D2)
    assert serving.current_version(ready) == live["version"]
    backfill = publish.run(ready, DS)  # `airflow tasks clear` of the older day's publish
    assert serving.current_version(ready) == live["version"]
    assert backfill["current_moved"] is False and backfill["current"] == live["version"]
    assert "later day" in backfill["current_reason"]
    assert backfill["version"] in serving.published_versions(ready)  # kept and visible
    stats = Lake.from_settings(ready).read_json(Lake.from_settings(ready).run_stats_path(DS, "publish"))
    assert stats["current_moved"] is False
    # the same day again moves CURRENT; an explicit flag moves it backwards
    again = publish.run(ready, D2)
    assert again["current_moved"] and serving.current_version(ready) == again["version"]
    forced = publish.run(ready.with_overrides(**{"serve.keep_versions": 10}), DS, make_current=True)
    assert forced["current_moved"] and serving.current_version(ready) == forced["version"]
    assert first_d1 != forced["version"]


def test_rollback_never_lands_on_the_version_rolled_back_from(ready):
    s = ready.with_overrides(**{"serve.keep_versions": 2})
    _copy_day(s, DS, D2)
    d3 = "2026-10-07"
    _copy_day(s, DS, d3)
    good = publish.run(s, DS)["version"]
    bad = publish.run(s, D2)["version"]
    out = rollback.run(s, reason="recommendations look wrong")
    assert out["to"] == good and out["marked_bad"] == bad
    assert serving.bad_versions(s)[bad]["reason"] == "recommendations look wrong"
    new = publish.run(s, d3)  # the next day: pruning keeps CURRENT's rollback target (good), drops bad first
    assert serving.current_version(s) == new["version"]
    assert good in serving.published_versions(s) and bad in new["pruned"]
    assert rollback.run(s)["to"] == good  # not onto the bad version
    with pytest.raises(DataError, match="marked bad"):  # the version just left is refused by name
        rollback.run(s, to=new["version"])
    with pytest.raises(DataError, match="since pruned"):
        rollback.run(s, to=bad)
    listed = {r["version"]: r for r in rollback.list_versions(s)}
    assert listed[bad]["kept"] is False and listed[bad]["bad"]["reason"] == "recommendations look wrong"


def test_prune_keeps_the_rollback_target_even_when_old(ready):
    s = ready.with_overrides(**{"serve.keep_versions": 2})
    _copy_day(s, DS, D2)
    a = publish.run(s, DS)["version"]
    b = publish.run(s, D2)["version"]
    backfills = [publish.run(s, DS) for _ in range(2)]  # two reruns of the older day: newer bundles, not live
    assert serving.current_version(s) == b
    assert a in serving.published_versions(s)
    assert backfills[0]["pruned"] == [] and backfills[1]["pruned"] == [backfills[0]["version"]]  # older day first
    assert rollback.run(s)["to"] == a  # CURRENT's rollback target survived pruning


def test_a_promotion_between_export_and_publish_applies_to_the_next_run(ready, serve_model, caplog):
    from serve_helpers import register

    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.stages import index

    register(ready, serve_model, version="v2", champion=False)
    registry.set_champion(ready, "v2", "manual: kp promote during the run")  # towers of v2 never exported
    with caplog.at_level("WARNING"):
        built = index.run(ready, DS)  # the rest of the day's serving chain
    assert built["model_version"] == "v1"
    assert any("serves v1" in r.getMessage() and "next run" in r.getMessage() for r in caplog.records)
    out = publish.run(ready, DS)
    assert out["model_version"] == "v1" and serving.current_version(ready) == out["version"]
    assert serving.serving_model(ready, "2026-10-07") == "v2"  # a day without an export of its own: the champion
    shutil.rmtree(layout.registry_version_dir(ready, "v1"))  # the pinned model deleted by hand
    with pytest.raises(DataError, match="pinned by its `kp export`.*clear the day's serve.export"):
        serving.serving_model(ready, DS)


def test_review_cases_damaged_marks_deleted_bundle_and_backfills(ready):
    """A damaged BAD_VERSIONS.json fails publish before CURRENT moves (exit 3, the file named); a live bundle deleted
    by hand still has a day (its id), so a backfill does not take its place; backfills of an older day are pruned
    before the versions of later days, and a rollback prefers a version that was live."""
    s = ready.with_overrides(**{"serve.keep_versions": 2})
    for day in (D2, "2026-10-07"):
        _copy_day(s, DS, day)
    a = publish.run(s, D2)["version"]
    b = publish.run(s, "2026-10-07")["version"]
    marks = Path(layout.bad_versions_path(s))
    marks.write_text("{not json")
    with pytest.raises(DataError, match="BAD_VERSIONS.json is damaged"):
        publish.run(s, "2026-10-07")
    assert serving.current_version(s) == b
    marks.unlink()
    backfills = [publish.run(s, DS)["version"] for _ in range(2)]  # older day, twice
    assert serving.current_version(s) == b
    kept = serving.published_versions(s)
    assert a in kept and b in kept and backfills[0] not in kept and backfills[1] in kept  # the newest stays visible
    assert rollback.run(s)["to"] == a  # the version that was live before b
    shutil.rmtree(layout.serving_version_dir(s, a))  # CURRENT's bundle deleted by hand
    late = publish.run(s, DS)
    assert late["current_moved"] is False and serving.current_version(s) == a
