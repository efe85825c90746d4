"""A deliberately broken challenger — a student TRAINED by the real stage from a random encoder with a
learning rate of ~0 (random weights) — is not promoted; `kp evaluate --require-promotion` exits 4; the
champion stays, and the next stage (ONNX export) still ships the champion. (tests/stages/test_evaluate.py
checks the gate on a hand-registered model; this goes through train-bi, the CLI and serving.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from distill_helpers import DS, trained_world
from reliability_helpers import make_settings

from keyphrase_pipeline.core import layout


def test_random_weights_challenger_is_not_promoted_end_to_end(tmp_path, monkeypatch):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.artifacts import registry, serving
    from keyphrase_pipeline.core.settings import get_settings, settings_env
    from keyphrase_pipeline.stages import evaluate, train_bi

    w = trained_world(make_settings)
    root = tmp_path / "lake"
    shutil.copytree(w["lake"], root)
    s = make_settings(root, train=w["settings"].train.model_dump(), serve={"dim": 16, "quantize": False})
    first = evaluate.run(s, DS)
    good = w["student"]["version"]
    assert first["promoted"] and registry.champion(s) == good

    broken_settings = s.with_overrides(**{"train.base_model": w["random"], "train.learning_rate": 1e-12,
                                          "train.bi_max_steps": 2})
    broken = train_bi.run(broken_settings, DS)["version"]
    assert broken != good and registry.exists(s, broken)

    # the CLI, with the same settings from KP_* variables: exit 4 and the reason printed
    for k in [k for k in list(__import__("os").environ) if k.startswith("KP_")]:
        monkeypatch.delenv(k)
    for k, v in settings_env(s).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        rc = cli.main(["evaluate", "--ds", DS, "--candidate", broken, "--require-promotion"])
    finally:
        get_settings.cache_clear()
    assert rc == 4
    promo = json.loads((Path(layout.registry_version_dir(s, broken)) / "promotion.json").read_text())
    assert promo["promoted"] is False and promo["champion_before"] == good
    champ_f1 = promo["champion_metrics"]["llm"]["f1"]
    stored = json.loads((Path(layout.registry_version_dir(s, broken)) / "metrics.json").read_text())
    assert stored["eval"]["llm"]["f1"] < champ_f1 - s.train.promote_tolerance  # it really is worse
    assert registry.champion(s) == good
    history = (Path(layout.registry_root(s)) / "champion_history.jsonl").read_text().splitlines()
    assert [json.loads(line)["version"] for line in history][-1] == good

    # the serving side (export, embed, index resolve the model through this) never sees the challenger
    assert serving.require_version(s) == good
