"""bench/student_start.py: the start encoders of two training probes keep the source's weights and change only what
they name (the pooling), and a folder without a model is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testsupport import load_bench


def test_start_keeps_the_weights_and_sets_the_pooling(tmp_path):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    start = load_bench("student_start", "student_start")
    src = build_tiny_encoder(tmp_path / "teacher")
    mean = start.build_start(str(tmp_path / "mean"), teacher=src)
    top = start.build_start(str(tmp_path / "max"), teacher=src, pooling="max")
    assert mean["from"] == src and top["pooling"] == "max"
    assert json.loads(Path(tmp_path, "max", "1_Pooling", "config.json").read_text())["pooling_mode"] == "max"
    texts = ["red phone case", "usb cable"]
    want = SentenceTransformer(src, device="cpu").encode(texts)
    np.testing.assert_allclose(SentenceTransformer(str(tmp_path / "mean"), device="cpu").encode(texts), want, atol=1e-6)
    assert not np.allclose(SentenceTransformer(str(tmp_path / "max"), device="cpu").encode(texts), want, atol=1e-3)
    with pytest.raises(FileNotFoundError, match="no model"):
        start.build_start(str(tmp_path / "x"), teacher=str(tmp_path))
