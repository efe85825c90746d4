"""kp.truth: the optional ground-truth provider is named by configuration, never imported by production code."""

from __future__ import annotations

import pytest

from kp.errors import ConfigError
from kp.settings import Settings
from kp.truth import load_truth


def test_no_provider_means_no_truth(tmp_path):
    assert load_truth(Settings(lake_root=str(tmp_path))) is None


def test_a_bad_provider_is_a_config_error(tmp_path):
    for spec in ("no_such_module:load", "kp.truth:no_such_function", "kp.truth"):
        with pytest.raises(ConfigError, match="truth_provider"):
            load_truth(Settings(lake_root=str(tmp_path), truth_provider=spec))


def test_the_synthetic_provider_finds_a_world_only_where_there_is_one(tmp_path, tiny_world):
    provider = "synthetic.world:load_truth"
    assert load_truth(Settings(lake_root=str(tmp_path), truth_provider=provider)) is None  # a lake without synth/
    truth = load_truth(tiny_world.with_overrides(truth_provider=provider))
    assert truth is not None and truth.is_relevant([-1], [-1]).tolist() == [False]
