"""bench/gpu_e2e.py: the project's own code timed on a device beside its CPU baseline. Here (no GPU) it runs
--quick on the CPU with the baseline forced, so every code path of the GPU run executes in make test."""

from __future__ import annotations

import json

import pytest
from testsupport import load_bench


@pytest.fixture(scope="module")
def gpu_e2e():
    return load_bench("gpu_e2e", "gpu_e2e")


def test_quick_run_reports_every_figure_with_its_cpu_baseline(gpu_e2e, tmp_path, capsys):
    out = tmp_path / "gpu_e2e.json"
    lines = gpu_e2e.main(["--quick", "--baseline", "--out", str(out)])
    assert [json.loads(x) for x in out.read_text().splitlines()] == lines
    assert [x["figure"] for x in lines] == ["train_cross", "train_bi", "embed_onnx", "embed_torch", "topk"]
    for x in lines:
        assert x["device"] == "cpu" and x["value"] > 0 and x["cpu_value"] > 0 and x["speedup"] > 0, x
    assert lines[0]["steps"] == gpu_e2e.QUICK["steps"] and lines[2]["providers"] == ["CPUExecutionProvider"]
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["results_file"] == str(out)  # bench/run_all.py keeps the file the script wrote


def test_without_a_gpu_the_full_run_says_it_skipped(gpu_e2e, monkeypatch, capsys):
    from keyphrase_pipeline.models import devices

    monkeypatch.setattr(devices, "torch_cuda", lambda: {"available": False, "devices": 0})
    assert gpu_e2e.main([])[0]["skipped"].startswith("no CUDA device")
    assert json.loads(capsys.readouterr().out.strip())["skipped"]


def test_cuda_asked_for_without_one_is_a_config_error(gpu_e2e, monkeypatch):
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.models import devices

    monkeypatch.setattr(devices, "torch_cuda", lambda: {"torch": "x", "cuda_build": None, "available": False,
                                                        "devices": 0, "names": []})
    with pytest.raises(ConfigError, match="--device='cuda'"):
        gpu_e2e.main(["--device", "cuda"])


def test_the_torch_index_finds_what_faiss_flat_finds(gpu_e2e):
    """Where FAISS has no GPU build, the top-K figure runs the project's search over TorchFlatIndex: same rows."""
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.models.ann import build_index
    from keyphrase_pipeline.models.topk import KeyphraseTable, search_batch

    rng = np.random.default_rng(1)
    kps = rng.standard_normal((200, 16)).astype("float32")
    kps /= np.linalg.norm(kps, axis=1, keepdims=True)
    items = rng.standard_normal((50, 16)).astype("float32")
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    table = KeyphraseTable(pd.Series([f"kp {i}" for i in range(200)], index=np.arange(200, dtype=np.int64)))
    want = search_batch(build_index(kps, np.arange(200, dtype=np.int64), "Flat"), table, np.arange(50), items, 10, -1.0)
    got = search_batch(gpu_e2e.TorchFlatIndex(kps, "cpu"), table, np.arange(50), items, 10, -1.0)
    assert (got[["item_id", "rank", "keyphrase_id"]].to_numpy() == want[["item_id", "rank", "keyphrase_id"]].to_numpy()).all()
    np.testing.assert_allclose(got["score"], want["score"], atol=1e-5)
