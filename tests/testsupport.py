"""Helpers shared by test modules (import as ``from testsupport import make_settings``).

Kept out of conftest.py: several conftest.py files exist (tests/, tests/dags/, tests/plugins/), so
``from conftest import ...`` would resolve to whichever was imported last.
"""

from __future__ import annotations

from pathlib import Path


def make_settings(lake_root: Path, **overrides):
    """Settings for tests: a private lake, small Spark, tiny training defaults."""
    from keyphrase_pipeline.core.settings import load_settings

    base = {
        "lake_root": str(lake_root),
        "truth_provider": "keyphrase_pipeline.synthetic.world:load_truth",  # the synthetic world's truth where the lake has one
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


def serve_on_loopback(fake):
    """Start ``fake.handler()`` on 127.0.0.1 (a free port) in a thread; set ``fake.url`` to its /v1 base.

    A generator for fixtures: ``yield from serve_on_loopback(fake)``; the server stops when it resumes.
    """
    import threading
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()


def load_bench(script: str, name: str, register: bool = False):
    """``bench/<script>.py`` as a module named ``name``, loaded by path (each test its own copy, under its own name).
    ``register``: also put it in ``sys.modules`` under ``name``, for scripts whose dataclasses or pickled records look
    their module up by name."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
