"""The CTR model's parts: hand-computed losses, stable ID hashing, semantic-ID codes, shapes, position handling and
the ONNX export used for batch inference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.models import ctr_model as cm
from keyphrase_pipeline.models import semantic_ids as sid


def test_decorrelation_loss_by_hand():
    import torch

    a = [1.0, 2.0, 3.0, 4.0]
    b = [4.0, 3.0, 2.0, 1.0]  # corr(a, b) = -1
    c = [1.0, -1.0, 1.0, -1.0]  # corr(a, c) = -2 / (sqrt(5) * 2) = -0.4472, corr(b, c) = +0.4472
    x = torch.tensor([a, b, c]).T
    assert cm.decorrelation_loss(x).item() == pytest.approx((1 + 0.2 + 0.2) / 3, abs=1e-6)
    assert cm.decorrelation_loss(x[:, :2]).item() == pytest.approx(1.0, abs=1e-6)
    # uncorrelated experts cost nothing; one expert, or one row, has nothing to de-correlate
    assert cm.decorrelation_loss(torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])).item() == \
        pytest.approx(0.0, abs=1e-7)
    assert cm.decorrelation_loss(x[:, :1]).item() == 0.0 and cm.decorrelation_loss(x[:1]).item() == 0.0
    # it has a gradient that lowers it
    w = x.clone().requires_grad_(True)
    cm.decorrelation_loss(w).backward()
    assert w.grad.abs().sum() > 0
    assert cm.cross_expert_correlation(x.numpy()) == pytest.approx((1 + 0.4472136 + 0.4472136) / 3, abs=1e-6)


def test_binomial_log_loss_by_hand():
    import torch

    logit = torch.tensor([0.0, math.log(1 / 3)])  # p = 0.5 and 0.25
    clicks, imps = torch.tensor([1.0, 0.0]), torch.tensor([4.0, 2.0])
    want = (-(1 * math.log(0.5) + 3 * math.log(0.5)) - 2 * math.log(0.75)) / 6
    assert cm.binomial_log_loss(logit, clicks, imps).item() == pytest.approx(want, abs=1e-6)
    assert cm.log_loss_per_impression(np.array([0.5, 0.25]), np.array([1, 0]), np.array([4, 2])) == \
        pytest.approx(want, abs=1e-9)
    # a row with no impressions counts for nothing
    assert cm.binomial_log_loss(torch.tensor([0.0, 5.0]), torch.tensor([1.0, 0.0]), torch.tensor([4.0, 0.0])).item() \
        == pytest.approx(math.log(2), abs=1e-6)


def test_weighted_auc_is_the_auc_over_impressions():
    from sklearn.metrics import roc_auc_score

    scores = np.array([0.9, 0.4, 0.6, 0.1])
    clicks, imps = np.array([3, 1, 0, 1]), np.array([5, 4, 2, 6])
    y, s = [], []
    for sc, c, n in zip(scores, clicks, imps, strict=True):
        y += [1] * c + [0] * (n - c)
        s += [sc] * n
    assert cm.weighted_auc(scores, clicks, imps) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert math.isnan(cm.weighted_auc(scores, np.zeros(4), imps))


def test_id_buckets_are_stable_and_in_range():
    ids = np.array([1_000_000, 1_000_001, 50_000_000, -5], dtype=np.int64)
    b = cm.id_bucket(ids, 1 << 18, cm.ITEM_SALT)
    assert b.dtype == np.int64 and ((b >= 0) & (b < 1 << 18)).all() and len(set(b)) == 4
    assert b.tolist() == cm.id_bucket(ids, 1 << 18, cm.ITEM_SALT).tolist()
    assert cm.id_bucket(np.int64(5), 10, 3).shape == () and cm.id_bucket(ids.reshape(-1, 1), 7, 3).shape == (len(ids), 1)
    assert b.tolist() != cm.id_bucket(ids, 1 << 18, cm.KEYPHRASE_SALT).tolist()  # two id spaces, two hashes
    assert b.tolist() == [194226, 41612, 76793, 80534]  # pinned (pure-Python splitmix64): a change would orphan every trained model


def test_semantic_ids_unpack_to_the_codes_faiss_decodes():
    import faiss

    x = np.random.default_rng(0).standard_normal((2000, 8)).astype("float32")
    book = sid.train_codebook(x, levels=3, bits=5)
    codes = sid.encode(book, x[:50])
    assert codes.shape == (50, 3) and codes.min() >= 0 and codes.max() < 32 and sid.code_shape(book) == (3, 32)
    cents = faiss.vector_to_array(book.rq.codebooks).reshape(-1, 8)
    recon = sum(cents[level * 32 + codes[:, level]] for level in range(3))
    np.testing.assert_allclose(recon, book.sa_decode(book.sa_encode(x[:50])), atol=1e-5)
    # near vectors share their first code more often than far ones
    near = sid.encode(book, x[:200] + 0.01)
    assert (near[:, 0] == sid.encode(book, x[:200])[:, 0]).mean() > 0.9
    with pytest.raises(DataError, match="cannot train"):
        sid.train_codebook(x[:10], 2, 5)
    with pytest.raises(ConfigError):
        sid.train_codebook(x, 0, 5)


def _inputs(cfg, n, rng):
    x = cm.example_inputs(cfg, n)
    for k in x:
        if k.endswith("bucket"):
            x[k] = rng.integers(0, cfg.id_buckets, n)
        elif k.endswith("codes"):
            x[k] = rng.integers(0, cfg.sid_codes, (n, cfg.sid_levels))
        elif k == "has_image":
            x[k] = (rng.random(n) < 0.5).astype("float32")
        else:
            x[k] = rng.standard_normal(x[k].shape).astype("float32")
    return x


def test_position_only_shifts_the_logit_and_the_onnx_export_predicts_at_the_reference(tmp_path):
    import onnxruntime as ort
    import torch

    cfg = cm.CtrConfig(use_image=True, image_dim=5, emb_dim=8, id_buckets=64, experts=3, max_position=10,
                       reference_position=1)
    model = cm.build_model(cfg, seed=1).eval()
    with torch.no_grad():
        model.position.weight[3] = 0.7
    x = _inputs(cfg, 6, np.random.default_rng(0))
    t = {k: torch.as_tensor(v) for k, v in x.items()}
    with torch.no_grad():
        ref, experts = model(t)
        at3, _ = model(t, torch.full((6,), 3))
        at99, _ = model(t, torch.full((6,), 99))  # beyond max_position: clipped to it
        at10, _ = model(t, torch.full((6,), 10))
    assert experts.shape == (6, 3)
    torch.testing.assert_close(at3 - ref, torch.full((6,), 0.7))
    torch.testing.assert_close(at99, at10)
    path = cm.export_onnx(model, cfg, tmp_path / "ctr.onnx")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == cfg.inputs()
    p = sess.run(["p_click"], x)[0]
    np.testing.assert_allclose(p, torch.sigmoid(ref).numpy(), atol=1e-5)
    cm.save(model, cfg, tmp_path / "m")
    again, cfg2 = cm.load(tmp_path / "m")
    assert cfg2 == cfg
    with torch.no_grad():
        torch.testing.assert_close(again(t)[0], ref)


def test_each_part_can_be_switched_off_and_none_is_refused():
    assert cm.CtrConfig(use_semantics=False, use_semantic_ids=False).inputs() == ["item_bucket", "keyphrase_bucket"]
    assert cm.CtrConfig(use_ids=False, use_semantic_ids=False).inputs() == ["item_vec", "keyphrase_vec"]
    with pytest.raises(ConfigError, match="at least one input"):
        cm.CtrConfig(use_ids=False, use_semantics=False, use_semantic_ids=False)
    with pytest.raises(ConfigError, match="image"):
        cm.CtrConfig(use_image=True, image_dim=0)
    single = cm.build_model(cm.CtrConfig(experts=1, id_buckets=16, emb_dim=4))
    assert single.gate is None and len(single.experts) == 1


def test_the_model_learns_a_signal_carried_by_the_semantics():
    """A few hundred steps on pairs whose click-through depends on the cosine: the held-out AUC is far from 0.5."""
    import torch

    rng = np.random.default_rng(0)
    cfg = cm.CtrConfig(use_ids=False, use_semantic_ids=False, emb_dim=8, experts=2)
    n = 4000
    a = rng.standard_normal((n, 8)).astype("float32")
    b = rng.standard_normal((n, 8)).astype("float32")
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    p = 1 / (1 + np.exp(-(4 * (a * b).sum(1) - 2)))
    imps = rng.integers(5, 50, n)
    clicks = rng.binomial(imps, p)
    model = cm.build_model(cfg, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = {"item_vec": torch.as_tensor(a), "keyphrase_vec": torch.as_tensor(b)}
    tr = slice(0, 3000)
    for _ in range(200):
        opt.zero_grad()
        logit, outs = model({k: v[tr] for k, v in x.items()})
        loss = cm.binomial_log_loss(logit, torch.as_tensor(clicks[tr]), torch.as_tensor(imps[tr]))
        (loss + 0.1 * cm.decorrelation_loss(outs)).backward()
        opt.step()
    with torch.no_grad():
        pred = torch.sigmoid(model({k: v[3000:] for k, v in x.items()})[0]).numpy()
    assert cm.weighted_auc(pred, clicks[3000:], imps[3000:]) > 0.75
    base = clicks[tr].sum() / imps[tr].sum()
    assert cm.log_loss_per_impression(pred, clicks[3000:], imps[3000:]) < \
        cm.log_loss_per_impression(np.full(1000, base), clicks[3000:], imps[3000:])
