"""bench/gpu_check.py: the GPU check runs on CPU at tiny shapes (no device in CI), and its pieces are right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from testsupport import load_bench

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    return load_bench("gpu_check", "gpu_check")


def test_quick_run_on_cpu_reports_every_figure(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    result = gpu_check.main(["--quick", "--device", "cpu", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["device"] == "cpu"
    for key in ("student_steps_per_s_b8_fp32", "student_steps_per_s_b8_bf16", "cross_steps_per_s_b8_fp32",
                "cross_steps_per_s_b8_bf16", "judge_prompts_per_s_fp32", "judge_prompts_per_s_bf16",
                "topk_torch_fp16_s", "topk_faiss_cpu_s_scaled"):
        assert result[key] > 0, key
    # fp16 scores may swap near-ties, nothing more
    assert result["topk_fp16_recall_at_k"] >= 0.98


def test_brute_force_topk_matches_exact_search(gpu_check):
    import torch

    rng = np.random.default_rng(3)
    items, kps = gpu_check.unit_rows(rng, 300, 16), gpu_check.unit_rows(rng, 80, 16)
    got, _ = gpu_check.topk_torch(items, kps, 5, 64, torch.device("cpu"))  # several chunks
    want = np.argsort(-(items @ kps.T), axis=1)[:, :5]
    assert got.shape == (300, 5)
    assert gpu_check.recall_at_k(got, want) >= 0.98
    assert gpu_check.recall_at_k(want[:, ::-1], want) == 1.0
    assert gpu_check.recall_at_k(want[:, :1].repeat(5, axis=1), want) == pytest.approx(0.2)


def test_committed_device_figures_are_from_a_gpu(gpu_check):
    """docs/PERFORMANCE.md cites bench/results/gpu_check.json: it must hold full-shape runs on a CUDA device."""
    doc = json.loads((ROOT / "bench" / "results" / "gpu_check.json").read_text())
    assert len(doc["runs"]) >= 2
    for run in doc["runs"]:
        assert run["device"] == "cuda" and not run["quick"]
        assert run["topk_items"] == 1_000_000 and run["topk_keyphrases"] == 100_000
    text = (ROOT / "docs" / "PERFORMANCE.md").read_text()
    lo, hi = (doc["range"]["judge_prompts_per_s_bf16"][b] for b in ("min", "max"))
    assert f"{lo:,.0f}" in text and f"{hi:,.0f}" in text


def test_full_run_without_a_gpu_is_skipped_and_writes_nothing(gpu_check, tmp_path, monkeypatch):
    """`make bench` on a CPU machine must not replace the committed GPU figures with a CPU run."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    result = gpu_check.main(["--out", str(out)])
    assert "no CUDA device" in result["skipped"] and not out.exists()
