"""The model registry: deterministic versions, atomic pointers, listing."""

from __future__ import annotations

import json
import os
import threading

import pytest

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError


def _fake_version(settings, version, kind="students", created="2026-10-10T00:00:00", f1=None):
    d = layout.registry_version_dir(settings, version, kind)
    os.makedirs(os.path.join(d, "model"))
    with open(os.path.join(d, "train_config.json"), "w") as f:
        json.dump({"created_at": created, "ds": version[:10], "label_mix": "llm"}, f)
    if f1 is not None:
        with open(os.path.join(d, "metrics.json"), "w") as f:
            json.dump({"eval": {"llm": {"f1": f1}}}, f)
    return d


def test_version_ids_are_deterministic():
    a = registry.version_id("2026-10-10", {"lr": 1e-3, "mix": "llm"}, {"rows": 10})
    assert a == registry.version_id("2026-10-10", {"mix": "llm", "lr": 1e-3}, {"rows": 10})
    assert a.startswith("2026-10-10-") and len(a) == len("2026-10-10-") + 8
    assert a != registry.version_id("2026-10-10", {"lr": 1e-3, "mix": "llm"}, {"rows": 11})
    assert a != registry.version_id("2026-10-11", {"lr": 1e-3, "mix": "llm"}, {"rows": 10})


def test_champion_pointer_switch_and_history(settings):
    assert registry.champion(settings) is None
    _fake_version(settings, "2026-10-10-aaaaaaaa")
    _fake_version(settings, "2026-10-11-bbbbbbbb")
    registry.set_champion(settings, "2026-10-10-aaaaaaaa", "first")
    registry.set_champion(settings, "2026-10-11-bbbbbbbb", "better")
    assert registry.champion(settings) == "2026-10-11-bbbbbbbb"
    root = layout.registry_root(settings)
    assert not [n for n in os.listdir(root) if n.startswith(".")]  # no temp files left behind
    promo = json.loads(open(os.path.join(layout.registry_version_dir(settings, "2026-10-11-bbbbbbbb"), "promotion.json")).read())
    assert promo["promoted"] and promo["reason"] == "better" and promo["previous_champion"] == "2026-10-10-aaaaaaaa"
    lines = open(os.path.join(root, "champion_history.jsonl")).read().splitlines()
    assert [json.loads(x)["version"] for x in lines] == ["2026-10-10-aaaaaaaa", "2026-10-11-bbbbbbbb"]
    assert layout.model_dir(settings, "2026-10-11-bbbbbbbb").endswith("students/2026-10-11-bbbbbbbb/model")
    with pytest.raises(ConfigError, match="no student version"):
        registry.set_champion(settings, "2026-10-12-cccccccc", "missing")
    with pytest.raises(ConfigError):
        layout.registry_version_dir(settings, "../evil")


def test_pointer_readers_never_see_a_partial_value(settings):
    versions = [f"2026-10-1{i}-{str(i) * 8}" for i in range(4)]
    for v in versions:
        _fake_version(settings, v)
    registry.set_champion(settings, versions[0], "init")
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(registry.champion(settings))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(40):
        registry.set_champion(settings, versions[i % 4], "flip")
    stop.set()
    t.join()
    assert seen <= set(versions)  # never empty, never half-written


def test_list_versions_newest_first_with_metrics(settings):
    _fake_version(settings, "2026-10-10-aaaaaaaa", created="2026-10-10T01:00:00", f1=0.8)
    _fake_version(settings, "2026-10-11-bbbbbbbb", created="2026-10-11T01:00:00", f1=0.9)
    os.makedirs(os.path.join(layout.registry_root(settings), "students", "_tmp-2026-10-12-x"))  # in progress: hidden
    registry.set_champion(settings, "2026-10-10-aaaaaaaa", "first")
    vs = registry.list_versions(settings)
    assert [v["version"] for v in vs] == ["2026-10-11-bbbbbbbb", "2026-10-10-aaaaaaaa"]
    assert vs[0]["metrics"]["eval"]["llm"]["f1"] == 0.9 and not vs[0]["current"]
    assert vs[1]["current"] and vs[1]["promotion"]["reason"] == "first"
    assert registry.list_versions(settings, "cross") == []
    _fake_version(settings, "2026-10-10-cccccccc", kind="cross")
    registry.set_latest_cross(settings, "2026-10-10-cccccccc")
    assert registry.latest_cross(settings) == "2026-10-10-cccccccc"
    with pytest.raises(ConfigError):
        registry.list_versions(settings, "teachers")


def test_an_undecodable_champion_pointer_is_a_clear_error_that_kp_promote_repairs(settings, monkeypatch):
    from pathlib import Path

    from keyphrase_pipeline.cli import main
    from keyphrase_pipeline.core.settings import get_settings

    _fake_version(settings, "2026-10-10-aaaaaaaa")
    _fake_version(settings, "2026-10-11-bbbbbbbb", created="2026-10-11T00:00:00")
    Path(layout.registry_pointer(settings, "students")).write_bytes(b"\x00\xff garbage")
    with pytest.raises(registry.UnreadablePointerError, match=r"registry/CHAMPION is unreadable: .*kp promote --version"):
        registry.champion(settings)
    got = registry.list_versions(settings)  # still listed, none marked current
    assert [v["version"] for v in got] == ["2026-10-11-bbbbbbbb", "2026-10-10-aaaaaaaa"]
    assert not any(v["current"] for v in got)
    monkeypatch.setenv("KP_LAKE_ROOT", settings.lake_root)
    get_settings.cache_clear()
    try:
        assert main(["promote", "--version", "2026-10-10-aaaaaaaa", "--reason", "repair"]) == 0
    finally:
        get_settings.cache_clear()
    assert registry.champion(settings) == "2026-10-10-aaaaaaaa"


def test_warm_start_version_is_always_from_an_earlier_day(settings):
    """The champion / CROSS_LATEST when it is from a day before ds; else the newest earlier-day version; never the
    day's own output (a rerun starts from the same model) nor a later day's (a backfill)."""
    assert registry.warm_start_version(settings, "students", "2026-10-12") is None
    for v in ("2026-10-10-aaaaaaaa", "2026-10-11-bbbbbbbb", "2026-10-12-cccccccc"):
        _fake_version(settings, v)
    registry.set_champion(settings, "2026-10-10-aaaaaaaa", "first")
    registry.set_champion(settings, "2026-10-11-bbbbbbbb", "second")
    assert registry.warm_start_version(settings, "students", "2026-10-12") == "2026-10-11-bbbbbbbb"
    registry.set_champion(settings, "2026-10-12-cccccccc", "the day's own")
    assert registry.warm_start_version(settings, "students", "2026-10-12") == "2026-10-11-bbbbbbbb"  # rerun
    assert registry.warm_start_version(settings, "students", "2026-10-11") == "2026-10-10-aaaaaaaa"  # backfill
    assert registry.warm_start_version(settings, "students", "2026-10-10") is None
    assert registry.warm_start_version(settings, "students", "2026-10-13") == "2026-10-12-cccccccc"
    _fake_version(settings, "0-handmade")  # a hand-made directory is not a dated version: never a start
    with open(layout.champion_history_path(settings), "a") as f:  # damaged or foreign lines are passed over
        for line in ("{torn line", '{"version": ""}', '{"version": "../x"}', '{"version": "0-handmade"}',
                     '{"version": "2026-10-11-zzzz"}', '["a list"]'):
            f.write(line + "\n")
    assert registry.warm_start_version(settings, "students", "2026-10-12") == "2026-10-11-bbbbbbbb"

    for v, created in (("2026-10-10-dddddddd", "2026-10-10T01:00:00"), ("2026-10-11-eeeeeeee", "2026-10-11T01:00:00"),
                       ("2026-10-11-ffffffff", "2026-10-11T02:00:00"), ("2026-10-12-99999999", "2026-10-12T01:00:00")):
        _fake_version(settings, v, kind="cross", created=created)
    registry.set_latest_cross(settings, "2026-10-12-99999999")
    assert registry.warm_start_version(settings, "cross", "2026-10-12") == "2026-10-11-ffffffff"
    assert registry.warm_start_version(settings, "cross", "2026-10-13") == "2026-10-12-99999999"
    assert registry.warm_start_version(settings, "cross", "2026-10-10") is None


def test_a_damaged_record_does_not_break_listing_or_the_warm_start(settings):
    d = _fake_version(settings, "2026-10-10-aaaaaaaa", kind="cross")
    with open(os.path.join(d, "train_config.json"), "w") as f:
        json.dump(["not", "an", "object"], f)
    assert [v["version"] for v in registry.list_versions(settings, "cross")] == ["2026-10-10-aaaaaaaa"]
    assert registry.warm_start_version(settings, "cross", "2026-10-11") == "2026-10-10-aaaaaaaa"


def test_resolve_cross_finds_the_registry_version_of_a_directory_however_it_is_spelled(settings, tmp_path):
    from pathlib import Path

    from testsupport import make_settings

    v = "2026-10-05-abc123"
    model = Path(layout.model_dir(settings, v, "cross"))
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    vdir = model.parent
    want = (layout.model_dir(settings, v, "cross"), v)
    (tmp_path / "link_v").symlink_to(vdir)
    (tmp_path / "link_m").symlink_to(model)
    for spelled in (v, str(vdir), f"{vdir}/", str(model), f"{model}/..", f"{vdir}/./model", str(tmp_path / "link_v"),
                    str(tmp_path / "link_m")):
        assert registry.resolve_cross(settings, spelled) == want, spelled
    (vdir / "onnx").mkdir()
    assert registry.resolve_cross(settings, str(vdir / "onnx")) == (str(vdir / "onnx"), None)  # not the model
    other = make_settings(tmp_path / "other_lake")  # another lake's registry: a directory like any other
    assert registry.resolve_cross(other, str(vdir)) == (f"{vdir}/model", None)
    tmp = Path(layout.registry_kind_dir(settings, "cross")) / "_tmp-2026-10-05-x"
    (tmp / "model").mkdir(parents=True)
    assert registry.resolve_cross(settings, str(tmp)) == (f"{tmp}/model", None)  # an unfinished write: no version
    bare = Path(layout.registry_kind_dir(settings, "cross")) / "2026-10-06-def456"
    bare.mkdir()
    assert registry.resolve_cross(settings, str(bare)) == (str(bare), None)  # no model/: the caller refuses it
    assert registry.resolve_cross(settings, "") == (None, None)
    with pytest.raises(ConfigError, match="serve.rerank_cross 'nope': neither a directory"):
        registry.resolve_cross(settings, "nope", "serve.rerank_cross")
