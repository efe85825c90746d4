"""keyphrase_pipeline.core.truth: the optional ground-truth provider is named by configuration, never imported by production code."""

from __future__ import annotations

import logging

import pytest

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.core.settings import Settings
from keyphrase_pipeline.core.truth import load_truth


def test_no_provider_means_no_truth_and_says_so_once(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("KP_TRUTH_PROVIDER", raising=False)  # set for the whole test session (tests/testsupport.py)
    # an earlier test's logging config (import-linter's) may have disabled this logger and INFO globally
    monkeypatch.setattr(logging.getLogger("keyphrase_pipeline.core.truth"), "disabled", False)
    disabled_below = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    try:
        with caplog.at_level(logging.INFO, logger="keyphrase_pipeline.core.truth"):
            assert load_truth(Settings(lake_root=str(tmp_path), truth_provider="")) is None
    finally:
        logging.disable(disabled_below)
    said = [r for r in caplog.records if r.name == "keyphrase_pipeline.core.truth"]
    assert len(said) == 1 and said[0].levelno == logging.INFO and "truth metrics are skipped" in said[0].getMessage()


@pytest.mark.parametrize("spec", ["keyphrase_pipeline.synthetic.world", "keyphrase_pipeline.synthetic.world:", ":load_truth",
                                  "keyphrase_pipeline.core.truth"])
def test_a_malformed_provider_names_the_expected_form(tmp_path, spec):
    with pytest.raises(ConfigError, match="expected the form module:function"):
        load_truth(Settings(lake_root=str(tmp_path), truth_provider=spec))


def test_a_bad_provider_is_a_config_error(tmp_path):
    for spec in ("no_such_module:load", "keyphrase_pipeline.core.truth:no_such_function", "keyphrase_pipeline.core.truth"):
        with pytest.raises(ConfigError, match="truth_provider"):
            load_truth(Settings(lake_root=str(tmp_path), truth_provider=spec))


def test_the_synthetic_provider_finds_a_world_only_where_there_is_one(tmp_path, tiny_world):
    provider = "keyphrase_pipeline.synthetic.world:load_truth"
    assert load_truth(Settings(lake_root=str(tmp_path), truth_provider=provider)) is None  # a lake without synth/
    truth = load_truth(tiny_world.with_overrides(truth_provider=provider))
    assert truth is not None and truth.is_relevant([-1], [-1]).tolist() == [False]
