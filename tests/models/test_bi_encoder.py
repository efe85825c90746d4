"""The student model helpers and model-kind detection (bi, cross, ONNX)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from testsupport import make_settings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("tiny") / "enc")


def _settings(tmp_path, tiny, dims=(32, 16)):
    return make_settings(tmp_path / "lake", train={"base_model": tiny, "matryoshka_dims": list(dims), "device": "cpu"},
                         serve={"dim": 16})


def test_student_towers_cut_and_normalise(tmp_path, tiny):
    from keyphrase_pipeline.models.bi_encoder import (
        build_student,
        encode_items,
        encode_keyphrases,
        load_student,
        save_student,
        score_pairs,
    )

    s = _settings(tmp_path, tiny)
    model = build_student(s)
    full = encode_items(model, ["red acme sneakers", "blue phone"], ["shoes", ""])
    cut = encode_items(model, ["red acme sneakers", "blue phone"], ["shoes", ""], dim=16)
    assert full.shape == (2, 32) and cut.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    # the cut is the prefix of the full embedding, re-normalised
    pre = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, pre, atol=1e-5)
    kp = encode_keyphrases(model, ["running shoes", "mobile"], dim=16)
    np.testing.assert_allclose(score_pairs(model, ["red acme sneakers", "blue phone"], ["shoes", ""],
                                           ["running shoes", "mobile"], dim=16), (cut * kp).sum(1), atol=1e-5)
    out = save_student(model, str(tmp_path / "m"), s)
    again = load_student(out, "cpu")
    np.testing.assert_allclose(encode_items(again, ["blue phone"], [""], 16), cut[1:], atol=1e-5)
    assert json.loads((tmp_path / "m" / "kp_model.json").read_text())["kind"] == "bi"


def test_matryoshka_dims_larger_than_the_encoder_are_refused(tmp_path, tiny):
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.models.bi_encoder import build_student

    with pytest.raises(ConfigError, match="exceed"):
        build_student(_settings(tmp_path, tiny, dims=(64, 16)))


def test_model_kind_detection(tmp_path, tiny):
    from keyphrase_pipeline.models.bi_encoder import model_kind
    from keyphrase_pipeline.models.cross_encoder import build_cross, predict_pairs, save_cross

    assert model_kind(tiny) == "bi"  # a plain sentence-transformers directory
    cross = build_cross(_settings(tmp_path, tiny))
    p = predict_pairs(cross, ["red acme sneakers"], ["shoes"], ["running shoes"])
    assert p.shape == (1,) and 0.0 < p[0] < 1.0  # a probability (sigmoid of one logit)
    save_cross(cross, str(tmp_path / "c" / "model"))
    assert model_kind(tmp_path / "c" / "model") == "cross"
    assert model_kind(tmp_path / "c") == "cross"  # a registry version directory
    (tmp_path / "c" / "model" / "kp_model.json").unlink()
    assert model_kind(tmp_path / "c" / "model") == "cross"  # from config.json's architecture
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "item.onnx").write_bytes(b"x")
    (tmp_path / "o" / "keyphrase.onnx").write_bytes(b"x")
    assert model_kind(tmp_path / "o") == "onnx"
    (tmp_path / "empty").mkdir()
    assert model_kind(tmp_path / "empty") is None
    assert model_kind(tmp_path / "missing") is None
