"""The rotation before the Matryoshka cut (models.cut_rotation): orthogonal, full-size cosines unchanged, the cut
keeps the directions relevant pairs agree along, composes, and travels into the ONNX towers."""

from __future__ import annotations

import numpy as np
import pytest

from keyphrase_pipeline.models.cut_rotation import fit_rotation, rotation_of, with_rotation


def _pairs(n=400, d=16, seed=0):
    """Relevant pairs that agree only along the LAST two coordinates (the cut to 2 keeps the first two)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 2))
    items = np.concatenate([rng.normal(size=(n, d - 2)), 3 * shared], axis=1)
    kps = np.concatenate([rng.normal(size=(n, d - 2)), 3 * shared], axis=1)
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return norm(items), norm(kps)


def _cut(x, dim):
    y = x[:, :dim]
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_rotation_is_orthogonal_and_puts_the_agreeing_directions_first():
    items, kps = _pairs()
    r = fit_rotation(items, kps)
    assert r.shape == (16, 16) and r.dtype == np.float32
    np.testing.assert_allclose(r.T @ r, np.eye(16), atol=1e-5)
    np.testing.assert_allclose((items @ r * (kps @ r)).sum(1), (items * kps).sum(1), atol=1e-5)  # full size kept
    plain = (_cut(items, 2) * _cut(kps, 2)).sum(1).mean()
    rotated = (_cut(items @ r, 2) * _cut(kps @ r, 2)).sum(1).mean()
    assert plain < 0.1 and rotated > 0.9  # the cut now keeps the shared directions
    with pytest.raises(ValueError):
        fit_rotation(items, kps[:, :8])


def test_a_student_with_a_rotation_encodes_rotated_and_composes(tmp_path):
    from sentence_transformers import SentenceTransformer

    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    model = SentenceTransformer(build_tiny_encoder(tmp_path / "m", hidden=32, seed=1), device="cpu")
    assert rotation_of(model) is None
    texts = ["red running shoes", "blue phone case", "lego set"]
    plain = model.encode(texts, convert_to_numpy=True)
    r1 = np.linalg.qr(np.random.default_rng(0).normal(size=(32, 32)))[0].astype(np.float32)
    r2 = np.linalg.qr(np.random.default_rng(1).normal(size=(32, 32)))[0].astype(np.float32)
    once = with_rotation(model, r1)
    np.testing.assert_allclose(once.encode(texts, convert_to_numpy=True), plain @ r1, atol=1e-5)
    twice = with_rotation(once, r2)
    assert sum(rotation_of_count(twice)) == 1  # composed into one Dense, never a chain
    np.testing.assert_allclose(twice.encode(texts, convert_to_numpy=True), plain @ r1 @ r2, atol=1e-5)
    twice.save(str(tmp_path / "saved"))
    again = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    np.testing.assert_allclose(rotation_of(again), r1 @ r2, atol=1e-6)


def rotation_of_count(model):
    from keyphrase_pipeline.models.cut_rotation import rotation_of_module

    return [rotation_of_module(m) is not None for m in model]


def test_the_onnx_tower_applies_the_rotation(tmp_path):
    from sentence_transformers import SentenceTransformer

    from keyphrase_pipeline.models.bi_encoder import write_marker
    from keyphrase_pipeline.models.onnx_export import export_tower
    from keyphrase_pipeline.models.onnx_tower import OnnxTower
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    model = SentenceTransformer(build_tiny_encoder(tmp_path / "m", hidden=32, seed=1), device="cpu")
    r = np.linalg.qr(np.random.default_rng(0).normal(size=(32, 32)))[0].astype(np.float32)
    rotated = with_rotation(model, r)
    rotated.save(str(tmp_path / "student"))
    write_marker(tmp_path / "student", "bi", serve_dim=16)
    export_tower(str(tmp_path / "student"), tmp_path / "onnx", dim=16, max_len=24)
    texts = ["red running shoes", "blue phone case"]
    want = rotated.encode(texts, convert_to_numpy=True)[:, :16]
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(OnnxTower(tmp_path / "onnx").embed(texts), want, atol=1e-4)


def test_a_warm_start_keeps_the_rotation_frozen(tmp_path):
    """A student trained from a rotated one (train.init_from=champion) never trains its rotation: it stays
    orthogonal, so full-size cosines stay what the encoder makes them."""
    from sentence_transformers import SentenceTransformer
    from testsupport import make_settings

    from keyphrase_pipeline.models.bi_encoder import build_student
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    model = SentenceTransformer(build_tiny_encoder(tmp_path / "m", hidden=32, seed=1), device="cpu")
    r = np.linalg.qr(np.random.default_rng(0).normal(size=(32, 32)))[0].astype(np.float32)
    with_rotation(model, r).save(str(tmp_path / "rotated"))
    s = make_settings(tmp_path / "lake", train={"matryoshka_dims": [32, 16], "device": "cpu"}, serve={"dim": 16})
    student = build_student(s, str(tmp_path / "rotated"))
    from keyphrase_pipeline.models.cut_rotation import rotation_of_module

    dense = [m for m in student if rotation_of_module(m) is not None]
    assert len(dense) == 1 and not any(p.requires_grad for p in dense[0].parameters())
    assert all(p.requires_grad for p in student[0].parameters())  # the encoder still trains
