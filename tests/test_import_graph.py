"""The import graph: production code never imports the synthetic (demo) package, the rooms hold (cli > deploy >
synthetic > orchestration > commands > stages > labels | artifacts > models > core, the UI on top), no stage imports
another stage, and no module imports itself through others.

The contracts live in pyproject.toml (``[tool.importlinter]``) and run here with import-linter; the
cycle check walks grimp's graph (the library import-linter is built on), imports inside functions included.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT_PACKAGES = ("keyphrase_pipeline", "keyphrase_ui")
SYNTHETIC = "keyphrase_pipeline.synthetic"


@pytest.fixture(scope="module", autouse=True)
def plugins_on_path():
    # Airflow puts plugins/ on sys.path, which makes plugins/keyphrase_ui the package keyphrase_ui
    added = str(REPO / "plugins") not in sys.path
    if added:
        sys.path.append(str(REPO / "plugins"))
    yield
    if added:
        sys.path.remove(str(REPO / "plugins"))


def test_import_linter_contracts_are_kept(monkeypatch, capsys):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(REPO)
    code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out


# Modules outside the packages import-linter sees (Airflow loads them as top-level files): checked by AST.
LOOSE_MODULES = (sorted((REPO / "dags").rglob("*.py")) + sorted((REPO / "jobs").glob("*.py"))
                 + [REPO / "plugins" / "keyphrase_plugin.py"])


def synthetic_imports(source: str) -> list[str]:
    """Every import of the synthetic package in ``source`` (inside functions too): ``import
    keyphrase_pipeline.synthetic...``, ``from keyphrase_pipeline.synthetic... import`` and
    ``from keyphrase_pipeline import synthetic``."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
            if node.module == "keyphrase_pipeline":  # from keyphrase_pipeline import synthetic
                names += [f"{node.module}.{a.name}" for a in node.names]
        else:
            names = []
        found += [n for n in names if n == SYNTHETIC or n.startswith(SYNTHETIC + ".")]
    return sorted(set(found))


def test_dags_and_the_airflow_plugin_never_import_synthetic():
    assert any(f.name == "keyphrase_daily.py" for f in LOOSE_MODULES) and LOOSE_MODULES[-1].exists()
    offenders = {str(f.relative_to(REPO)): synthetic_imports(f.read_text()) for f in LOOSE_MODULES}
    assert not {f: i for f, i in offenders.items() if i}


def test_the_loose_module_check_finds_an_import():
    src = "def f():\n    from keyphrase_pipeline.synthetic.world import load_truth\n"
    assert synthetic_imports(src) == ["keyphrase_pipeline.synthetic.world"]
    assert synthetic_imports("import os, keyphrase_pipeline.synthetic\nfrom . import synthetic_x\n") == [SYNTHETIC]
    assert synthetic_imports("from keyphrase_pipeline import synthetic, core\n") == [SYNTHETIC]
    assert synthetic_imports("import synthetic\nfrom keyphrase_pipeline.core import layout\n") == []


def cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    adj = {m: [n for n in graph.find_modules_directly_imported_by(m) if n in graph.modules] for m in graph.modules}
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in sorted(adj):
        if root in index:
            continue
        work = [(root, iter(adj[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on_stack.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = counter
                counter += 1
                stack.append(w)
                on_stack.add(w)
                work.append((w, iter(adj[w])))
            elif w in on_stack:
                low[v] = min(low[v], index[w])
    return found


def test_no_import_cycles():
    import grimp

    graph = grimp.build_graph(*ROOT_PACKAGES, cache_dir=None)
    # the graph saw the code
    assert "keyphrase_pipeline.stages.index" in graph.modules and "keyphrase_pipeline.synthetic.world" in graph.modules
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    import grimp

    graph = grimp.ImportGraph()
    for m in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(m)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    assert cycles(graph) == [["a.x", "a.y", "a.z"]]


# The only places production code may NAME a synthetic module, to load it at run time when configuration
# asks (the demo commands, the DAG's demo mode, the simulated judge backend, `kp eval-labels --world`).
# import-linter cannot see importlib; this check can: a new by-name load of the demo fails here.
BY_NAME_ALLOWED = {
    ("keyphrase_pipeline/cli.py", "keyphrase_pipeline.synthetic.synth"),
    ("keyphrase_pipeline/cli.py", "keyphrase_pipeline.synthetic.report"),
    ("keyphrase_pipeline/cli.py", "keyphrase_pipeline.synthetic.judge_quality"),  # kp judge-quality: a synthetic lake's truth
    ("keyphrase_pipeline/deploy/airflow_standalone.py", "keyphrase_pipeline.synthetic.world:load_truth"),
    # the native cluster (make cluster) on CPU: the stand-in judge server process and the demo lake's truth
    ("keyphrase_pipeline/deploy/cluster.py", "keyphrase_pipeline.synthetic.judge_server"),
    ("keyphrase_pipeline/deploy/cluster.py", "keyphrase_pipeline.synthetic.world:load_truth"),
    ("keyphrase_pipeline/orchestration/planning.py", "keyphrase_pipeline.synthetic.synth"),
    ("keyphrase_pipeline/orchestration/run_settings.py", "keyphrase_pipeline.synthetic.world:load_truth"),
    ("keyphrase_pipeline/labels/judges/__init__.py", "keyphrase_pipeline.synthetic.simulated_judge"),
    ("keyphrase_pipeline/commands/eval_labels.py", "keyphrase_pipeline.synthetic.synth_labels"),
}


def synthetic_names(source: str) -> list[str]:
    """String constants in ``source`` that name a synthetic module (``keyphrase_pipeline.synthetic[.x][:attr]``)."""
    import ast
    import re

    name = re.compile(r"keyphrase_pipeline\.synthetic(\.\w+)*(:\w+)?")
    return [n.value for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and name.fullmatch(n.value.strip())]


def test_production_code_names_the_demo_only_where_allowed():
    found = set()
    package = REPO / "keyphrase_pipeline"
    demo_world_runners = {package / "deploy" / f"{m}.py" for m in ("demo", "cluster_e2e", "cluster_faults")}
    for f in sorted(package.rglob("*.py")):
        if "synthetic" not in f.relative_to(package).parts and f not in demo_world_runners:
            found |= {(f.relative_to(REPO).as_posix(), v) for v in synthetic_names(f.read_text())}
    for f in [*LOOSE_MODULES, *sorted((REPO / "plugins" / "keyphrase_ui").rglob("*.py"))]:
        found |= {(f.relative_to(REPO).as_posix(), v) for v in synthetic_names(f.read_text())}
    assert found - BY_NAME_ALLOWED == set(), "production code loads the demo by name outside the allowed places"
    assert found == BY_NAME_ALLOWED  # each allowed place is real (the list does not go stale)


def test_the_by_name_check_sees_an_importlib_load():
    src = "import importlib\ndef f():\n    return importlib.import_module('keyphrase_pipeline.synthetic.world')\n"
    assert synthetic_names(src) == ["keyphrase_pipeline.synthetic.world"]
    assert synthetic_names('"""Docs naming keyphrase_pipeline.synthetic.world in a sentence."""') == []
