"""models.ann: a FAISS factory is checked against the data before training (IVF nlist vs training vectors,
PQ codebooks), the training sample grows with the factory, and what FAISS cannot train is a ConfigError."""

from __future__ import annotations

import numpy as np
import pytest

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.models import ann


def _vectors(n, d=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_602_vectors_with_ivf4096_get_ivf15_and_the_reason():
    choice = ann.choose_factory("IVF4096,Flat", 602, 16)
    assert (choice.factory, choice.requested, choice.train_sample, choice.exact) == ("IVF15,Flat", "IVF4096,Flat", 602, False)
    assert "4096 IVF lists" in choice.note and "159744" in choice.note and "only 602" in choice.note
    x = _vectors(602)
    index = ann.build_index(x, np.arange(602, dtype=np.int64) + 1000, choice.factory, {"nprobe": 15})
    assert index.ntotal == 602 and index.is_trained
    _, got = index.search(x[:3], 1)
    assert got[:, 0].tolist() == [1000, 1001, 1002]  # nprobe = nlist: exhaustive, each vector finds itself


def test_build_index_refuses_what_faiss_cannot_train_before_faiss_does():
    x = _vectors(602)
    with pytest.raises(ConfigError, match=r"'IVF4096,Flat' on 602 vectors: its IVF k-means has 4096 centroids") as err:
        ann.build_index(x, np.arange(602, dtype=np.int64), "IVF4096,Flat")
    assert err.value.exit_code == 2 and err.value.__cause__ is None  # checked before training, not FAISS's abort


def test_same_forms_with_an_hnsw_quantizer_and_pq():
    assert ann.choose_factory("IVF4096_HNSW32,Flat", 602, 16).factory == "IVF15_HNSW32,Flat"
    assert ann.choose_factory("IVF64,PQ4x4", 2000, 16).factory == "IVF51,PQ4x4"  # PQ 16 centroids: 624 <= 2000
    assert ann.kmeans_sizes(ann._parse_factory("IVF64,PQ4x4", 16)) == [("IVF", 64), ("PQ", 16)]
    pq8 = ann.choose_factory("IVF64,PQ4", 2000, 16)  # 8-bit codebooks (256 centroids) want 9984 vectors
    assert pq8.exact and pq8.factory == "Flat" and pq8.train_sample == 0 and "PQ codebooks of 256 centroids" in pq8.note
    tiny = ann.choose_factory("IVF4096,Flat", 60, 16)  # 60 // 39 = 1 list: exact search
    assert tiny.exact and "only 60" in tiny.note
    hnsw = ann.choose_factory("HNSW32,Flat", 10, 16)  # nothing to train
    assert (hnsw.factory, hnsw.train_sample, hnsw.note) == ("HNSW32,Flat", 0, "")
    ok = ann.choose_factory("IVF100,Flat", 10_000, 16)
    assert (ok.factory, ok.train_sample, ok.note) == ("IVF100,Flat", 10_000, "")


def test_a_string_faiss_rejects_is_a_config_error():
    with pytest.raises(ConfigError, match="serve.ann_factory='IVFx,Flat' is not a FAISS index factory string") as err:
        ann.choose_factory("IVFx,Flat", 1000, 16)
    assert err.value.exit_code == 2


def test_capped_sample_grows_to_39_per_list(monkeypatch, capfd):
    """The training sample was capped at TRAIN_SAMPLE whatever the factory: IVF110000 on a 100k sample
    aborted inside FAISS. Scaled down 100x: a cap of 1000 vectors, IVF1100 over 45,000 vectors."""
    monkeypatch.setattr(ann, "TRAIN_SAMPLE", 1000)
    n, d = 45_000, 8
    choice = ann.choose_factory("IVF1100,Flat", n, d)
    assert (choice.factory, choice.train_sample, choice.note) == ("IVF1100,Flat", 39 * 1100, "")
    x = _vectors(n, d)
    index = ann.build_index(x, np.arange(n, dtype=np.int64), "IVF1100,Flat")
    assert index.is_trained and index.ntotal == n
    # above the cap but below cap/39 lists: FAISS used to warn that 1000 points are too few for 100 lists
    assert ann.choose_factory("IVF100,Flat", 5000, d).train_sample == 3900
    capfd.readouterr()
    ann.build_index(x[:5000], np.arange(5000, dtype=np.int64), "IVF100,Flat")
    assert "please provide at least" not in capfd.readouterr().err
