"""Fixtures for the Keyphrases UI plugin: a lake with a real published version (tiny world, tiny encoder,
the real export/embed/index/recommend/publish stages), and Airflow's API app with the plugin mounted."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "plugins") not in sys.path:  # Airflow puts the plugins folder on sys.path; so do the tests
    sys.path.append(str(REPO / "plugins"))
_PUBLISHED: list = []


def plugin_settings(world_settings):
    return world_settings.with_overrides(**{"train.matryoshka_dims": [32, 16], "serve.dim": 16,
                                            "serve.quantize": False, "serve.top_k": 10, "serve.recall_sample": 50})


@pytest.fixture(scope="session")
def published_lake(tiny_world_lake, tmp_path_factory, spark):
    """A lake (read-only template) with a champion, run stats, curves and a published serving version."""
    if _PUBLISHED:
        return _PUBLISHED[0]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keyphrase_pipeline.jobs import embed, export, index, publish, recommend
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.core.settings import load_settings
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    root = tmp_path_factory.mktemp("plugin_lake") / "lake"
    shutil.copytree(tiny_world_lake, root)
    # a demo lake: its truth comes from the synthetic world's provider (keyphrase_pipeline.core.truth)
    s = plugin_settings(load_settings(lake_root=str(root), truth_provider="keyphrase_pipeline.synthetic.world:load_truth"))
    lake = Lake.from_settings(s)
    ds = lake.partitions("catalog")[-1]
    version = f"{ds}-0123abcd"
    vdir = Path(lake.path("registry", "students", version))
    build_tiny_encoder(vdir / "model", hidden=32, seed=5)
    (vdir / "train_config.json").write_text(json.dumps({"matryoshka_dims": [32, 16], "ds": ds, "version": version}))
    (vdir / "metrics.json").write_text(json.dumps({"heldout": {"f1": 0.625, "precision": 0.5, "recall": 0.8333}}))
    (vdir / "promotion.json").write_text(json.dumps({"promoted": True, "reason": "first model: no champion to beat"}))
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1.0, 0.6, 0.4])
    fig.savefig(vdir / "curves.png")
    plt.close(fig)
    lake.write_pointer(lake.path("registry", "CHAMPION"), version)
    lake.write_run_stats(ds, "evaluate", {"candidate": version, "promoted": True,
                                          "reason": "first model: no champion to beat"})
    export.run(s, ds)
    embed.run(s, ds, "items", spark=spark)
    embed.run(s, ds, "keyphrases", spark=spark)
    index.run(s, ds)
    recommend.run(s, ds, spark=spark)
    publish.run(s, ds)
    _PUBLISHED.append({"root": root, "ds": ds, "version": version, "settings": s})
    return _PUBLISHED[0]


@pytest.fixture(scope="session")
def airflow_api(published_lake):
    """Airflow's real API app (plugins mounted, SimpleAuthManager), pointed at the published lake, plus a JWT."""
    import os

    from fastapi.testclient import TestClient

    from keyphrase_pipeline.core import airflow_standalone as af
    from keyphrase_pipeline.core.settings import get_settings, settings_env

    root, ds, version = published_lake["root"], published_lake["ds"], published_lake["version"]
    af.ensure_metadata_db()
    env = settings_env(published_lake["settings"])
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        get_settings.cache_clear()
        from airflow.api_fastapi.app import create_app

        client = TestClient(create_app(apps="core"))
        passwords = json.loads((Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated").read_text())
        resp = client.post("/auth/token", json={"username": "admin", "password": passwords["admin"]})
        assert resp.status_code in (200, 201), resp.text
        yield {"client": client, "token": resp.json()["access_token"], "ds": ds, "version": version, "root": root}
    get_settings.cache_clear()
