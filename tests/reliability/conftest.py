"""Fixtures of the fault-injection suite: a tiny world with the day's CTR labels and pairs already selected
(built once per session with the real Spark stages, copied per test), and a local OpenAI-compatible
HTTP server on 127.0.0.1 that can go down, hang, or answer."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from testsupport import serve_on_loopback

sys.path.append(str(Path(__file__).resolve().parent))
from reliability_helpers import DS, FakeLLM, make_settings  # noqa: E402


@pytest.fixture(scope="session")
def pairs_template(tiny_world_lake, tmp_path_factory, spark):
    """Template lake (read-only): the tiny world + CTR labels + the day's pairs for the simulated judge."""
    from keyphrase_pipeline.stages import ctr_labels, select_pairs

    root = tmp_path_factory.mktemp("rel_pairs") / "lake"
    shutil.copytree(tiny_world_lake, root)
    s = make_settings(root)
    ctr_labels.run(s, DS, spark=spark)
    select_pairs.run(s, DS, spark=spark)
    return root


@pytest.fixture
def pairs_world(pairs_template, tmp_path):
    """Settings on a private copy of ``pairs_template`` (judge batches of 20 pairs)."""
    root = tmp_path / "lake"
    shutil.copytree(pairs_template, root)
    return make_settings(root, judge={"batch_size": 10, "concurrency": 2})


@pytest.fixture
def llm_server():
    yield from serve_on_loopback(FakeLLM())


