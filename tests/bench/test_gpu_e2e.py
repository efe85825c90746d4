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
    assert [x["figure"] for x in lines] == ["train_cross", "train_bi", "embed_onnx", "embed_torch", "topk", "judge_tiny"]
    for x in lines:
        assert x["device"] == "cpu" and x["value"] > 0 and x["cpu_value"] > 0 and x["speedup"] > 0, x
    assert lines[0]["steps"] == gpu_e2e.QUICK["steps"] and lines[2]["providers"] == ["CPUExecutionProvider"]
    judge = lines[-1]  # the project's transformers judge on random weights: said so in the line
    assert judge["runs_on"] == "cpu (fp32)" and judge["weights"].startswith("random") and judge["params"] > 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["results_file"] == str(out)  # bench/run_all.py keeps the file the script wrote


def test_without_a_gpu_the_full_run_says_it_skipped(gpu_e2e, monkeypatch, capsys):
    from keyphrase_pipeline.models import devices

    monkeypatch.setattr(devices, "torch_cuda", lambda: {"available": False, "devices": 0})
    assert gpu_e2e.main([])[0]["skipped"].startswith("no CUDA device")
    assert json.loads(capsys.readouterr().out.strip())["skipped"]


def test_cuda_asked_for_without_one_is_a_config_error(gpu_e2e, monkeypatch, capsys):
    """Exit 2 with the ConfigError's message, no traceback; --device auto without a GPU skips like no --device."""
    from keyphrase_pipeline.models import devices

    monkeypatch.setattr(devices, "torch_cuda", lambda: {"torch": "x", "cuda_build": None, "available": False,
                                                        "devices": 0, "names": []})
    with pytest.raises(SystemExit) as done:
        gpu_e2e.main(["--device", "cuda"])
    assert done.value.code == 2 and "--device='cuda'" in capsys.readouterr().err
    assert gpu_e2e.main(["--device", "auto"])[0]["skipped"].startswith("no CUDA device")


def test_training_rates_leave_the_set_up_out(gpu_e2e):
    """n/2 steps in 12 s and n in 20 s: the set-up (4 s) drops out, 150 steps in 8 s; a difference in the noise
    falls back to the longer run's own rate."""
    short = {"cross_steps": 150, "cross_s": 12.0, "bi_steps": 4, "bi_s": 3.0}
    long = {"cross_steps": 300, "cross_s": 20.0, "bi_steps": 8, "bi_s": 2.5}
    rates = gpu_e2e.marginal_rates(short, long)
    assert rates["train_cross"] == pytest.approx(150 / 8) and rates["train_bi"] == pytest.approx(8 / 2.5)


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


def test_an_fp16_carry_is_timed_from_an_fp32_copy(gpu_e2e, tmp_path):
    """The encoder carried to a GPU machine is fp16 (to fit a run's 64 MiB); the stages start from an fp32 copy of
    it, as they would from the production encoder, with the same weights up to fp16 rounding."""
    import torch
    from sentence_transformers import SentenceTransformer

    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    base = build_tiny_encoder(tmp_path / "tiny")
    carried = gpu_e2e.prepare_carry(base, tmp_path / "carry")
    assert {p.dtype for p in SentenceTransformer(str(carried), device="cpu").parameters()} == {torch.float16}
    assert gpu_e2e.fp32_base(base, tmp_path / "w0") == base  # already fp32: used as it is
    upcast = gpu_e2e.fp32_base(str(carried), tmp_path)
    assert upcast != str(carried)
    got = dict(SentenceTransformer(upcast, device="cpu").named_parameters())
    want = dict(SentenceTransformer(base, device="cpu").named_parameters())
    assert all(p.dtype == torch.float32 for p in got.values())
    for name, p in want.items():
        torch.testing.assert_close(got[name], p, atol=2e-3, rtol=2e-3)
