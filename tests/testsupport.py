"""Helpers shared by test modules (import as ``from testsupport import make_settings``).

Kept out of conftest.py: several conftest.py files exist (tests/, tests/dags/, tests/plugins/), so
``from conftest import ...`` would resolve to whichever was imported last.
"""

from __future__ import annotations

from pathlib import Path


def make_settings(lake_root: Path, **overrides):
    """Settings for tests: a private lake, small Spark, tiny training defaults."""
    from kp.settings import load_settings

    base = {
        "lake_root": str(lake_root),
        "spark": {"master": "local[2]", "shuffle_partitions": 4, "driver_memory": "1g", "fast_start": True},
        "synth": {"scale": "tiny", "seed": 7, "days": 12, "start_date": "2026-10-01"},
        "ctr": {"window_days": 7, "min_impressions": 5},
        "pairs": {"daily_budget": 300, "shard_size": 100},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_settings(**base)
