"""kp export: champion's towers to ONNX, verified, idempotent, optional int8, Triton layout, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_helpers import DS, register, serve_model, serve_settings, serve_world, write_inputs  # noqa: F401

from keyphrase_pipeline.core.errors import ConfigError, DataError, GateError
from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.core.layout import onnx_dir
from keyphrase_pipeline.stages import export


def test_export_verifies_and_writes_layout(serve_world):
    stats = export.run(serve_world, DS)
    root = Path(onnx_dir(serve_world, "v1"))
    rec = json.loads((root / "export.json").read_text())
    assert stats["skipped"] is False and rec["verified"] and rec["dim"] == 16
    assert stats["parity"]["max_abs_diff"] < serve_world.serve.export_tolerance
    assert stats["parity"]["cos_min"] > 0.9999
    for tower in ("item", "keyphrase"):
        assert (root / tower / "model.onnx").exists() and (root / tower / "tokenizer.json").exists()
        assert (root / "triton" / f"{tower}_tower" / "1" / "model.onnx").exists()
        assert "max_batch_size" in (root / "triton" / f"{tower}_tower" / "config.pbtxt").read_text()
    assert rec["max_len"]["item"] > rec["max_len"]["keyphrase"]
    assert json.loads((root / "keyphrase" / "tower.json").read_text())["max_len"] == rec["max_len"]["keyphrase"]
    assert not (root / "item" / "model.int8.onnx").exists()  # quantize is off by default
    run_stats = Lake.from_settings(serve_world).read_json(Lake.from_settings(serve_world).run_stats_path(DS, "export"))
    assert run_stats["version"] == "v1"


def test_export_is_idempotent_unless_forced(serve_world):
    export.run(serve_world, DS)
    f = Path(onnx_dir(serve_world, "v1")) / "item" / "model.onnx"
    mtime = f.stat().st_mtime_ns
    assert export.run(serve_world, DS)["skipped"] is True
    assert f.stat().st_mtime_ns == mtime
    assert export.run(serve_world, DS, force=True)["skipped"] is False
    assert f.stat().st_mtime_ns != mtime


def test_export_at_another_length_than_the_model_was_trained_at_is_redone(serve_world):
    """An export whose item tower serves another length than the student was trained (and is scored) at, e.g.
    one written when the towers served a fixed 64 tokens, is not current: export redoes it, embed refuses it."""
    from keyphrase_pipeline.core.layout import model_dir
    from keyphrase_pipeline.models.onnx_export import tower_max_len

    export.run(serve_world, DS)
    path = Path(onnx_dir(serve_world, "v1")) / "export.json"
    rec = json.loads(path.read_text())
    assert rec["max_len"]["item"] == tower_max_len(str(model_dir(serve_world, "v1")), "item")
    assert export.is_exported(serve_world, "v1") is not None
    rec["max_len"]["item"] += 7
    path.write_text(json.dumps(rec))
    assert export.is_exported(serve_world, "v1") is None
    again = export.run(serve_world, DS)
    assert again["skipped"] is False and export.is_exported(serve_world, "v1") is not None


def test_tolerance_gate_refuses_and_writes_nothing(serve_world):
    s = serve_world.with_overrides(**{"serve.export_tolerance": 1e-12})
    with pytest.raises(GateError, match="export_tolerance"):
        export.run(s, DS)
    root = Path(onnx_dir(s, "v1"))
    assert not root.exists()
    assert not [p for p in root.parent.iterdir() if p.name.startswith("_")]  # temp dir cleaned up


def test_int8_kept_above_floors_and_dropped_below(serve_world):
    kept = export.run(serve_world.with_overrides(**{"serve.quantize": True, "serve.int8_min_cosine": 0.5,
                                                     "serve.int8_min_topk_overlap": 0.1}), DS)
    assert kept["int8"]["tried"] and kept["int8"]["kept"] and kept["model_file"] == "model.int8.onnx"
    assert 0.5 < kept["int8"]["cos_mean"] <= 1.0 + 1e-6 and 0 <= kept["int8"]["topk_overlap"] <= 1
    root = Path(onnx_dir(serve_world, "v1"))
    assert (root / "item" / "model.int8.onnx").exists()

    dropped = export.run(serve_world.with_overrides(**{"serve.quantize": True, "serve.int8_min_cosine": 1.5}), DS,
                         force=True)
    assert dropped["int8"]["tried"] and not dropped["int8"]["kept"] and dropped["model_file"] == "model.onnx"
    assert not (root / "item" / "model.int8.onnx").exists()


def test_missing_model_errors(tmp_path, serve_model):
    s = serve_settings(tmp_path / "lake")
    with pytest.raises(DataError, match="CHAMPION"):
        export.run(s, DS)
    lake = Lake.from_settings(s)
    lake.write_pointer(lake.path("registry", "CHAMPION"), "v9")
    with pytest.raises(DataError, match="missing model"):
        export.run(s, DS)


def test_dimension_mismatch_with_training(tmp_path, serve_model):
    s = serve_settings(tmp_path / "lake")
    write_inputs(s)
    register(s, serve_model, train_config={"matryoshka_dims": [32, 8]})
    with pytest.raises(ConfigError, match="dimension mismatch"):
        export.run(s, DS)


def test_kp_score_with_the_exported_towers_matches_torch(serve_world, tmp_path):
    """`kp score --model <onnx dir>` serves the exported towers: same scores as the torch student."""
    import pandas as pd

    from keyphrase_pipeline.commands import score

    export.run(serve_world, DS)
    pairs = pd.DataFrame({"title": ["red phone case for iphone 12", "steel garden hose 50ft", "blue mug"],
                          "category": ["Cases", "Garden", ""],
                          "keyphrase": ["iphone 12 case", "garden hose", "coffee mug"]})
    src = tmp_path / "pairs.parquet"
    pairs.to_parquet(src)
    onnx_out, torch_out = tmp_path / "onnx.csv", tmp_path / "torch.csv"
    assert score.run(serve_world, onnx_dir(serve_world, "v1"), str(src), str(onnx_out))["kind"] == "onnx"
    assert score.run(serve_world, "v1", str(src), str(torch_out))["kind"] == "bi"
    a, b = pd.read_csv(onnx_out)["score"], pd.read_csv(torch_out)["score"]
    assert (a - b).abs().max() < 1e-4


def test_kp_score_with_the_exported_towers_serves_the_students_hybrid_score(serve_world, tmp_path):
    """An export of a student with a hybrid score: ``score`` is the towers' cosine plus its lexical bonus (the student's
    kp_model.json, found from the export) and ``cosine`` the cosine alone, both as the torch student gives them."""
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.commands import score
    from keyphrase_pipeline.models.bi_encoder import read_marker, write_marker
    from keyphrase_pipeline.models.lexical_match import HybridScore, match_features

    hybrid = HybridScore(1.0, (0.6, 0.2, -0.3))
    model_dir = Path(Lake.from_settings(serve_world).path("registry", "students", "v1", "model"))
    export.run(serve_world, DS)  # the export is verified against the student's cosine, whatever its hybrid
    write_marker(model_dir, **{"kind": "bi", **read_marker(model_dir), "hybrid": hybrid.as_dict()})
    pairs = pd.DataFrame({"title": ["red phone case for iphone 12", "steel garden hose 50ft", "blue mug"],
                          "category": ["Cases", "Garden", ""], "keyphrase": ["iphone 12 case", "garden hose 25ft", "tea"]})
    src = tmp_path / "pairs.parquet"
    pairs.to_parquet(src)
    onnx_out, torch_out = tmp_path / "onnx.csv", tmp_path / "torch.csv"
    stats = score.run(serve_world, onnx_dir(serve_world, "v1"), str(src), str(onnx_out))
    assert stats["kind"] == "onnx" and stats["columns"][-1] == "cosine"
    assert score.run(serve_world, "v1", str(src), str(torch_out))["columns"][-1] == "cosine"
    a, b = pd.read_csv(onnx_out), pd.read_csv(torch_out)
    assert (a["score"] - b["score"]).abs().max() < 1e-4 and (a["cosine"] - b["cosine"]).abs().max() < 1e-4
    bonus = hybrid.bonus(match_features(pairs["title"].tolist(), pairs["category"].tolist(), pairs["keyphrase"].tolist()))
    np.testing.assert_allclose(a["score"] - a["cosine"], bonus, atol=1e-5)
