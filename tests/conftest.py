"""Shared fixtures. Environment for an offline, quiet, 2-core machine is set before anything imports."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The repository root first on sys.path: the checkout's keyphrase_pipeline is the one tested, even where
# another copy is installed (a fresh clone tested with a shared virtual environment).
import sys  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AIRFLOW_HOME", str(REPO / "var" / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# Tests never read the user's lake or settings by accident.
# KP_UI_DEMO_LAKE only switches on the opt-in demo-world browser test (tests/plugins/test_keyphrase_ui_browser.py).
for key in [k for k in os.environ if k.startswith("KP_") and k not in ("KP_RUN_SLOW", "KP_UI_DEMO_LAKE")]:
    del os.environ[key]


from testsupport import make_settings  # noqa: E402  (tests/ is on sys.path: rootdir conftest)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KP_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set KP_RUN_SLOW=1 (make test-all) to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def settings(tmp_path):
    """Settings with an empty lake in a temp dir."""
    return make_settings(tmp_path / "lake")


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession for the whole test session (JVM start ~10 s)."""
    from keyphrase_pipeline.core.spark import get_spark

    s = get_spark(make_settings(Path("/tmp/kp-unused-lake")), "tests")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def tiny_world_lake(tmp_path_factory):
    """A tiny synthetic world generated once per session (read-only: copy before writing)."""
    from keyphrase_pipeline.synthetic import synth

    root = tmp_path_factory.mktemp("tiny_world") / "lake"
    synth.run(make_settings(root))
    return root


@pytest.fixture
def tiny_world(tiny_world_lake, tmp_path):
    """Settings pointing at a private, writable copy of the tiny world."""
    root = tmp_path / "lake"
    shutil.copytree(tiny_world_lake, root)
    return make_settings(root)
