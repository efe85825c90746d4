"""ONNX export of a tower: parity with torch, the Matryoshka cut + re-normalisation inside the graph,
dynamic axes, int8 quantisation, Triton config, the per-process session cache."""

from __future__ import annotations

import numpy as np
import pytest

from keyphrase_pipeline.models import onnx_export as ox
from keyphrase_pipeline.models.onnx_tower import OnnxTower, get_tower

TEXTS = ox.SAMPLE_TEXTS + ["a much longer title " * 12 + "[SEP] category", "x"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("tiny") / "model", hidden=32, seed=3)


@pytest.fixture(scope="module")
def tower(tiny, tmp_path_factory):
    return ox.export_tower(tiny, tmp_path_factory.mktemp("onnx") / "item", dim=16, max_len=32)


def test_parity_with_torch(tiny, tower):
    ref = ox.torch_embed(tiny, TEXTS, dim=16, max_len=32)
    got = OnnxTower(tower).embed(TEXTS, batch_size=4)
    c = ox.compare(ref, got)
    assert got.shape == (len(TEXTS), 16) and got.dtype == np.float32
    assert c["max_abs_diff"] < 1e-4
    assert c["cos_min"] > 0.9999


def test_cut_and_renormalise_inside_graph(tiny, tower):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(tiny, device="cpu")
    full = st.encode(TEXTS[:6], normalize_embeddings=True)  # 32-d, unit norm
    raw_cut = full[:, :16]
    got = OnnxTower(tower).embed(TEXTS[:6])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # the cut of a unit vector is shorter than 1: the graph re-normalised it
    assert (np.linalg.norm(raw_cut, axis=1) < 0.999).all()
    np.testing.assert_allclose(got, raw_cut / np.linalg.norm(raw_cut, axis=1, keepdims=True), atol=1e-5)


def test_dynamic_axes_and_order(tower):
    t = OnnxTower(tower)
    one = t.embed(["red shoes"])
    many = t.embed(["a long item title with many words [SEP] shoes", "red shoes", "x"], batch_size=2)
    np.testing.assert_allclose(one[0], many[1], atol=1e-5)  # padding in a batch does not change a row
    unsorted = t.embed(TEXTS, batch_size=3, sort_by_length=False)
    sorted_ = t.embed(TEXTS, batch_size=3, sort_by_length=True)
    np.testing.assert_allclose(unsorted, sorted_, atol=1e-5)
    assert t.embed([]).shape == (0, 16)


def test_truncation_at_tower_max_len(tower):
    t = OnnxTower(tower)
    base = "word " * 40
    # beyond max_len (32 tokens incl. CLS/SEP) extra words are cut off, so both texts embed the same
    np.testing.assert_allclose(t.embed([base])[0], t.embed([base + "extra tail words"])[0], atol=1e-6)


def test_int8_per_channel_close_to_fp32(tower):
    q = ox.quantize_int8(tower / "model.onnx", tower / "model.int8.onnx")
    assert q.exists() and q.stat().st_size < (tower / "model.onnx").stat().st_size
    fp = OnnxTower(tower).embed(TEXTS)
    i8 = OnnxTower(tower, "model.int8.onnx").embed(TEXTS)
    c = ox.compare(fp, i8)
    assert 0.9 < c["cos_mean"] <= 1.0 + 1e-6
    assert c["max_abs_diff"] > 0  # it really is another graph


def test_topk_overlap_and_compare():
    rng = np.random.default_rng(0)
    items, kps = rng.normal(size=(20, 8)), rng.normal(size=(50, 8))
    assert ox.topk_overlap(items, kps, items, kps, 10) == 1.0
    assert ox.topk_overlap(items, kps, items, -kps, 10) == 0.0  # reversed scores: disjoint top-10 of 50
    assert ox.compare(items, items)["cos_min"] == pytest.approx(1.0)
    assert ox.compare(items, -items)["cos_min"] == pytest.approx(-1.0)


def test_triton_config():
    cfg = ox.triton_config("item_tower", 64)
    assert 'backend: "onnxruntime"' in cfg and "dynamic_batching" in cfg
    assert 'name: "sentence_embedding"' in cfg and "dims: [ 64 ]" in cfg


def test_session_cached_per_process(tower):
    a = get_tower(tower)
    b = get_tower(str(tower))
    assert a is b
    assert get_tower(tower, threads=1) is not a


def test_missing_tower_is_clear_error(tmp_path):
    from keyphrase_pipeline.core.errors import DataError

    with pytest.raises(DataError, match="kp export"):
        OnnxTower(tmp_path)


def test_item_tower_serves_at_the_length_the_model_was_trained_at(tiny, tmp_path):
    """A student this project trained (kp_model.json of kind bi) serves its item tower at its own length; any
    other model (a base encoder says 256 or 512) at ITEM_MAX_LEN; both capped by the position table."""
    import json
    import shutil
    from pathlib import Path

    from keyphrase_pipeline.models.bi_encoder import write_marker

    def set_len(d, sbert=None, tokenizer=None):
        for name, key, value in (("sentence_bert_config.json", "max_seq_length", sbert),
                                 ("tokenizer_config.json", "model_max_length", tokenizer)):
            path = d / name
            cfg = json.loads(path.read_text()) if path.exists() else {}
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
            path.write_text(json.dumps(cfg))

    assert ox.model_max_len(tiny) == 32  # build_tiny_encoder sets 32 tokens
    cap = json.loads((Path(tiny) / "config.json").read_text())["max_position_embeddings"]
    assert ox.tower_max_len(tiny, "item") == min(ox.ITEM_MAX_LEN, cap)  # no marker: not a trained student
    student = shutil.copytree(tiny, tmp_path / "student")
    write_marker(student, "bi", serve_dim=16)
    assert ox.tower_max_len(str(student), "item") == 32 and ox.tower_max_len(str(student), "keyphrase") == 24
    set_len(student, sbert=None, tokenizer=12)  # sentence-transformers 6 keeps the length in the tokenizer config
    assert ox.tower_max_len(str(student), "item") == 12 and ox.tower_max_len(str(student), "keyphrase") == 12
    set_len(student, sbert=20, tokenizer=12)  # the sentence-transformers config wins when it says
    assert ox.model_max_len(str(student)) == 20
    set_len(student, sbert=None, tokenizer=1e30)  # Hugging Face's "no limit"
    assert ox.model_max_len(str(student)) is None
    assert ox.tower_max_len(str(student), "item") == min(ox.ITEM_MAX_LEN, cap)
    set_len(student, sbert=None, tokenizer=4096)  # longer than the position table
    assert ox.tower_max_len(str(student), "item") == cap
    base = shutil.copytree(tiny, tmp_path / "base")
    set_len(base, sbert=256, tokenizer=512)  # what a base encoder says: not what the towers serve
    assert ox.tower_max_len(str(base), "item") == min(ox.ITEM_MAX_LEN, cap)
