"""docs/ARCHITECTURE.md's code map is the tree: every module of the package sits in exactly one room of the map,
every file and folder the map names exists, every top-level folder of the checkout is named, ``jobs/`` holds one
entry point per stage of the stage table, and models/README.md names only settings that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "keyphrase_pipeline"


def _table(section: str, first_header: str) -> list[list[str]]:
    """The rows (cells) of the markdown table under ``## section`` whose header starts with ``| first_header``."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return rows


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def rooms() -> dict[str, list[str]]:
    """room (a folder, or a module for a room of one file) -> the module files the map lists in it."""
    out = {}
    for room, _kind, modules in _table("Layout of the code", "room"):
        (path,) = _ticked(room)
        out[path] = _ticked(modules)
    return out


def test_every_module_of_the_package_is_in_one_room_of_the_map():
    mapped = []
    for room, modules in rooms().items():
        base = REPO / room if room.endswith("/") else (REPO / room).parent
        for m in modules:
            assert (base / m).is_file(), f"docs/ARCHITECTURE.md lists {room}{m}, which does not exist"
            mapped.append((base / m).relative_to(REPO).as_posix())
    tree = sorted(p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    assert sorted(mapped) == tree, "the code map and the package differ: add the module to its room's row"


def test_the_rooms_of_the_map_are_the_packages_folders():
    folders = {p.parent.relative_to(REPO).as_posix() + "/" for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    assert {r for r in rooms() if r.endswith("/")} == folders


def test_every_top_level_folder_is_named_and_exists():
    named = {_ticked(c[0])[0] for c in _table("Layout of the code", "folder")}
    named |= {n for c in _table("Layout of the code", "folder") for n in _ticked(c[0])}
    for name in named:
        assert (REPO / name.rstrip("/")).exists(), f"docs/ARCHITECTURE.md names {name}, which does not exist"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    top = {f.split("/", 1)[0] + "/" for f in tracked if "/" in f and not f.startswith(".")}
    assert top <= named, f"top-level folders missing from the map: {sorted(top - named)}"


def test_jobs_holds_one_entry_point_per_stage():
    from keyphrase_pipeline.stages import STAGES

    entry_points = sorted(p.stem for p in (REPO / "jobs").glob("*.py"))
    assert entry_points == sorted(s.name for s in STAGES)
    assert not (REPO / "jobs" / "__init__.py").exists()  # not a package: pip installs one top-level name
    for s in STAGES:
        assert f'main(["{s.command}", *sys.argv[1:]])' in (REPO / "jobs" / f"{s.name}.py").read_text()


def test_a_jobs_entry_point_runs_its_stage_command():
    out = subprocess.run([str(Path(__import__("sys").executable)), str(REPO / "jobs" / "index.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "kp index" in out.stdout


@pytest.mark.parametrize("doc", ["models/README.md", "jobs/README.md"])
def test_settings_named_in_the_top_level_readmes_exist(doc):
    from keyphrase_pipeline.core.settings import Settings

    text = (REPO / doc).read_text()
    for var in re.findall(r"KP_[A-Z0-9_]+", text):
        path = [p.lower() for p in var.removeprefix("KP_").split("__") if p]
        model = Settings
        for i, part in enumerate(path):
            assert part in model.model_fields, f"{doc}: {var} names no setting ({part!r})"
            model = model.model_fields[part].annotation
            if i < len(path) - 1 and not hasattr(model, "model_fields"):
                pytest.fail(f"{doc}: {var} goes below a plain setting")


def test_the_stages_room_holds_exactly_the_stage_table():
    from keyphrase_pipeline.stages import STAGES

    modules = sorted(p.stem for p in (PACKAGE / "stages").glob("*.py") if p.name != "__init__.py")
    assert modules == sorted(s.name for s in STAGES), "a stage module without a STAGES entry, or the reverse"


def _contracts() -> dict[str, dict]:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return {c["id"]: c for c in config}


def test_the_layers_contract_names_every_room_of_the_package():
    layers = [name.strip() for layer in _contracts()["rooms"]["layers"] for name in layer.split("|")]
    rooms = {p.parent.name for p in PACKAGE.glob("*/__init__.py")} | {"cli"}
    assert sorted(layers) == sorted(rooms), "a room of the package is missing from the layers contract (or gone)"


def test_every_production_room_is_forbidden_the_demo():
    sources = set(_contracts()["no-demo-in-production"]["source_modules"])
    demo_runners = {"demo", "cluster_e2e", "cluster_faults", "review_e2e"}  # deploy's modules that run the demo world
    want = {f"keyphrase_pipeline.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")
            if p.parent.name not in ("synthetic", "deploy")}
    want |= {f"keyphrase_pipeline.deploy.{p.stem}" for p in (PACKAGE / "deploy").glob("*.py")
             if p.stem not in demo_runners | {"__init__"}}
    want |= {"keyphrase_pipeline.cli", "keyphrase_ui"}
    assert sources == want
