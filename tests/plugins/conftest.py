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
                                            "serve.quantize": False, "serve.top_k": 10, "serve.recall_sample": 50,
                                            "ctr.window_days": 7, "ctr.min_impressions": 5,  # the tiny world's 12 days
                                            "pairs.daily_budget": 300, "pairs.shard_size": 100})


def _student(lake, version: str, ds: str, seed: int, created_at: str, metrics: dict, promotion: dict) -> None:
    """A tiny student in the registry with its config, metrics, promotion decision and training curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    vdir = Path(lake.path("registry", "students", version))
    build_tiny_encoder(vdir / "model", hidden=32, seed=seed)
    (vdir / "train_config.json").write_text(json.dumps({"matryoshka_dims": [32, 16], "ds": ds, "version": version,
                                                        "created_at": created_at}))
    (vdir / "metrics.json").write_text(json.dumps(metrics))
    (vdir / "promotion.json").write_text(json.dumps(promotion))
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1.0, 0.6, 0.4 + 0.1 * (seed % 2)])
    fig.savefig(vdir / "curves.png")
    plt.close(fig)


def build_tiny_cross(model_dir: Path, seed: int = 3) -> str:
    """A tiny randomly initialised cross-encoder (BERT, 2 layers, hidden 32, one output) saved at ``model_dir``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from keyphrase_pipeline.models.base import default_encoder_path

    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return str(model_dir)


from ui_helpers import CHALLENGER_EVAL, CHAMPION_EVAL  # noqa: E402  (tests/plugins is on sys.path, as for conftest)


@pytest.fixture(scope="session")
def published_lake(tiny_world_lake, tmp_path_factory, spark):
    """A lake (read-only template) with a champion and a rejected challenger (both exported and embedded), a
    cross-encoder, run stats, curves, a published serving version, the day's CTR labels and LLM labels (the
    real ctr, select-pairs, label and merge stages, simulated judge)."""
    if _PUBLISHED:
        return _PUBLISHED[0]
    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.core.settings import load_settings
    from keyphrase_pipeline.stages import (
        ctr_labels,
        embed,
        export,
        index,
        llm_label,
        merge_labels,
        publish,
        recommend,
        select_pairs,
        train_ctr,
    )

    root = tmp_path_factory.mktemp("plugin_lake") / "lake"
    shutil.copytree(tiny_world_lake, root)
    # a demo lake: its truth comes from the synthetic world's provider (keyphrase_pipeline.core.truth)
    s = plugin_settings(load_settings(lake_root=str(root), truth_provider="keyphrase_pipeline.synthetic.world:load_truth"))
    lake = Lake.from_settings(s)
    ds = lake.partitions("catalog")[-1]
    version, challenger = f"{ds}-0123abcd", f"{ds}-4567cdef"
    _student(lake, version, ds, 5, f"{ds}T01:00:00+00:00",
             {"heldout": {"f1": 0.625, "precision": 0.5, "recall": 0.8333}, "eval": CHAMPION_EVAL},
             {"promoted": True, "reason": "first model: no champion to beat"})
    reason = "F1 0.5980 is worse than champion 0.6250 by 0.0270 > tolerance 0.01: champion kept"
    _student(lake, challenger, ds, 6, f"{ds}T03:00:00+00:00",
             {"heldout": {"f1": 0.61, "precision": 0.49, "recall": 0.81}, "eval": CHALLENGER_EVAL, "eval_ds": ds},
             {"promoted": False, "reason": reason, "ds": ds, "champion_before": version,
              "champion_metrics": CHAMPION_EVAL, "tolerance": 0.01, "evaluated_at": f"{ds}T03:30:00+00:00"})
    lake.write_pointer(lake.path("registry", "CHAMPION"), version)
    cross = f"{ds}-89abcdef"
    build_tiny_cross(Path(layout.model_dir(s, cross, "cross")))
    lake.write_pointer(layout.registry_pointer(s, "cross"), cross)
    lake.write_run_stats(ds, "evaluate", {"version": challenger, "promoted": False, "reason": reason,
                                          "champion_before": version, "champion_after": version,
                                          "metrics": CHALLENGER_EVAL, "champion_metrics": CHAMPION_EVAL,
                                          "cross_version": cross})
    # the challenger's towers and embeddings first (embed's run stats of the day are then the champion's)
    export.run(s, ds, version=challenger)
    embed.run(s, ds, "items", spark=spark, version=challenger)
    embed.run(s, ds, "keyphrases", spark=spark, version=challenger)
    export.run(s, ds)
    embed.run(s, ds, "items", spark=spark)
    embed.run(s, ds, "keyphrases", spark=spark)
    ctr_labels.run(s, ds, spark=spark)
    # the CTR model on the tiny world's days (a budget for its few rows), so the published rows carry expected CTR
    ctr = train_ctr.run(s.with_overrides(**{"ctr_model.epochs": 10, "ctr_model.learning_rate": 0.01,
                                            "ctr_model.batch_rows": 1024, "ctr_model.sid_bits": 4}), ds)
    assert ctr["promoted"], ctr
    index.run(s, ds)
    recommend.run(s, ds, spark=spark)
    publish.run(s, ds)
    select_pairs.run(s, ds, spark=spark)
    llm_label.run_all(s, ds)
    merge_labels.run(s, ds)
    _PUBLISHED.append({"root": root, "ds": ds, "version": version, "challenger": challenger, "cross": cross,
                       "settings": s})
    return _PUBLISHED[0]


@pytest.fixture(scope="module")
def airflow_api(published_lake):
    """Airflow's real API app (plugins mounted, SimpleAuthManager), pointed at the published lake, plus a JWT.
    Module scope: its settings leave the environment after each test module (a session scope left them, e.g.
    KP_SERVE__TOP_K=10, to every later test module of the suite)."""
    import os

    from fastapi.testclient import TestClient

    from keyphrase_pipeline.core.settings import get_settings, settings_env
    from keyphrase_pipeline.deploy import airflow_standalone as af

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
        yield {"client": client, "token": resp.json()["access_token"], "ds": ds, "version": version, "root": root,
               "challenger": published_lake["challenger"], "cross": published_lake["cross"],
               "settings": published_lake["settings"]}
    get_settings.cache_clear()


@pytest.fixture
def lake_env(monkeypatch):
    """``use(root)`` points the plugin (served in this process) at another lake for the test."""
    from keyphrase_pipeline.core.settings import get_settings

    def use(root):
        monkeypatch.setenv("KP_LAKE_ROOT", str(root))
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()
