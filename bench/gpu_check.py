"""GPU paths, measured: training steps/s in bf16 vs fp32, the judge's forward in bf16, brute-force top-K.

Self-contained (torch + transformers, FAISS optional), so it runs on a GPU machine's own stack without
this project's other dependencies. Models have the production SHAPES with random weights (no model hub
is reachable; throughput depends on shape and sequence length, not on weight values):

- **student step**: a two-tower bi-encoder of all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads),
  mean pooling, in-batch-negatives cross-entropy with scale 20 (what sentence-transformers'
  ``MultipleNegativesRankingLoss`` computes), AdamW; keyphrase 16 tokens, item 64 tokens.
- **cross-encoder step**: the same encoder on (keyphrase, item) pairs of 80 tokens with a 1-logit head and
  binary cross-entropy (sentence-transformers' ``BinaryCrossEntropyLoss`` for cross-encoders), AdamW.
- **judge forward**: a causal LM of SmolLM2-135M's shape (30 layers, hidden 576, 9 heads, 3 KV heads),
  192-token prompts, next-token logits at the last position (the judge reads yes/no log-probs there).
- **top-K**: N items x M keyphrases, 64-d, L2-normalised: brute force in torch (fp16 matmul + ``topk``, in
  item chunks) vs FAISS ``IndexFlatIP`` on the CPU (timed on a sample of items and scaled up, said so in
  the output), with recall@K of the fp16 result against FAISS's exact fp32 one.

Each training/forward figure: fp32 and bf16 autocast, steps (or prompts) per second over timed steps after
warm-up, CUDA-synchronised. ``--quick`` runs tiny shapes on whatever device is there (the tests run it on
CPU). Prints one JSON line; writes ``bench/results/gpu_check.json`` (``gpu_check_quick.json`` for --quick)
or ``--out``.

    python bench/gpu_check.py            # on the GPU machine: full shapes, 1M x 100k top-K
    python bench/gpu_check.py --quick    # tiny shapes, any device
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FULL = {"encoder": dict(layers=6, hidden=384, heads=12, ffn=1536, vocab=30522),
        "llm": dict(layers=30, hidden=576, heads=9, kv_heads=3, ffn=1536, vocab=49152),
        "batch": [32, 256], "judge_batch": 64, "steps": 20, "warmup": 3,
        "items": 1_000_000, "keyphrases": 100_000, "faiss_sample": 50_000, "k": 20, "chunk": 32_768}
QUICK = {"encoder": dict(layers=2, hidden=32, heads=2, ffn=64, vocab=1000),
         "llm": dict(layers=2, hidden=32, heads=4, kv_heads=2, ffn=64, vocab=1000),
         "batch": [8], "judge_batch": 4, "steps": 3, "warmup": 1,
         "items": 3000, "keyphrases": 500, "faiss_sample": 1000, "k": 10, "chunk": 1024}
KP_LEN, ITEM_LEN, PAIR_LEN, PROMPT_LEN = 16, 64, 80, 192


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device, dtype: str):
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


def encoder(shape: dict, device):
    """A BERT encoder of the given shape (random weights) on ``device``, in training mode."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                     num_attention_heads=shape["heads"], intermediate_size=shape["ffn"], max_position_embeddings=512)
    return BertModel(cfg).to(device).train()


def mean_pool(out, mask):
    """Mean of the token vectors where ``mask`` is 1: ``(batch, hidden)``."""
    m = mask.unsqueeze(-1).to(out.dtype)
    return (out * m).sum(1) / m.sum(1).clamp(min=1)


def time_steps(step, steps: int, warmup: int, device) -> float:
    """Calls of ``step()`` per second over ``steps`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - t0)


def student_steps(cfg: dict, device, batch: int, dtype: str) -> float:
    """Bi-encoder training steps/s (in-batch negatives, scale 20, AdamW) at ``batch`` pairs."""
    import torch
    import torch.nn.functional as F

    model = encoder(cfg["encoder"], device)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    gen = torch.Generator(device="cpu").manual_seed(0)
    kp = torch.randint(1000 if cfg["encoder"]["vocab"] > 1000 else 5, cfg["encoder"]["vocab"], (batch, KP_LEN),
                       generator=gen).to(device)
    item = torch.randint(5, cfg["encoder"]["vocab"], (batch, ITEM_LEN), generator=gen).to(device)
    kp_mask, item_mask = torch.ones_like(kp), torch.ones_like(item)
    labels = torch.arange(batch, device=device)

    def step():
        with _autocast(device, dtype):
            a = mean_pool(model(input_ids=kp, attention_mask=kp_mask).last_hidden_state, kp_mask)
            b = mean_pool(model(input_ids=item, attention_mask=item_mask).last_hidden_state, item_mask)
            scores = 20.0 * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
            loss = F.cross_entropy(scores.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return time_steps(step, cfg["steps"], cfg["warmup"], device)


def cross_steps(cfg: dict, device, batch: int, dtype: str) -> float:
    """Cross-encoder training steps/s (1-logit head on [CLS], BCE, AdamW) at ``batch`` pairs."""
    import torch
    import torch.nn.functional as F

    model = encoder(cfg["encoder"], device)
    head = torch.nn.Linear(cfg["encoder"]["hidden"], 1).to(device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=5e-5)
    gen = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(5, cfg["encoder"]["vocab"], (batch, PAIR_LEN), generator=gen).to(device)
    mask = torch.ones_like(ids)
    target = (torch.rand(batch, generator=gen) > 0.5).float().to(device)

    def step():
        with _autocast(device, dtype):
            logit = head(model(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]).squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logit.float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return time_steps(step, cfg["steps"], cfg["warmup"], device)


def judge_prompts(cfg: dict, device, dtype: str) -> float:
    """Judge prompts/s: forward of ``judge_batch`` prompts of PROMPT_LEN tokens, last-position logits, with the
    model held in ``dtype`` (bf16 weights, as a serving judge loads them; fp32 otherwise)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = cfg["llm"]
    lc = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                     num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], intermediate_size=s["ffn"],
                     max_position_embeddings=2048, tie_word_embeddings=True)
    model = LlamaForCausalLM(lc).to(device).eval()
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    gen = torch.Generator(device="cpu").manual_seed(2)
    ids = torch.randint(5, s["vocab"], (cfg["judge_batch"], PROMPT_LEN), generator=gen).to(device)

    @torch.inference_mode()
    def step():
        logits = model(input_ids=ids, logits_to_keep=1).logits[:, -1]
        torch.log_softmax(logits.float(), dim=-1)

    return cfg["judge_batch"] * time_steps(step, cfg["steps"], cfg["warmup"], device)


def topk_torch(items, keyphrases, k: int, chunk: int, device):
    """Brute-force top-``k`` keyphrases per item: fp16 matmul + ``topk`` in item chunks on ``device``.

    ``items`` float32 ``(n, d)``, ``keyphrases`` float32 ``(m, d)`` (numpy, L2-normalised). Returns (ids int64
    ``(n, k)``, seconds including the host->device copies and the ids' copy back)."""
    import numpy as np
    import torch

    half = torch.float16
    t0 = time.perf_counter()
    kps = torch.from_numpy(keyphrases).to(device).to(half)
    out = []
    for start in range(0, len(items), chunk):
        x = torch.from_numpy(items[start:start + chunk]).to(device).to(half)
        scores = x @ kps.T
        out.append(torch.topk(scores.float() if device.type == "cpu" else scores, k, dim=1).indices.cpu())
    _sync(device)
    ids = torch.cat(out).numpy().astype(np.int64)
    return ids, time.perf_counter() - t0


def topk_faiss(items, keyphrases, k: int):
    """Exact top-``k`` with FAISS ``IndexFlatIP`` on the CPU (all cores): (ids int64 ``(n, k)``, seconds)."""
    import faiss

    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(keyphrases.shape[1])
    index.add(keyphrases)
    _, ids = index.search(items, k)
    return ids, time.perf_counter() - t0


def recall_at_k(got, want) -> float:
    """Mean share of ``want``'s ids (per row) found in ``got``'s row: recall@K of ``got`` against ``want``."""
    hits = sum(len(set(g) & set(w)) for g, w in zip(got.tolist(), want.tolist()))
    return hits / max(1, want.size)


def seconds(x: float) -> float:
    """A duration for the result file: 4 significant digits, so a fast quick run never rounds to 0.0."""
    return float(f"{x:.4g}")


def unit_rows(rng, n: int, d: int):
    """``n`` random L2-normalised float32 rows of size ``d``."""
    import numpy as np

    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes (any device; used by the tests)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    p.add_argument("--out", default=None, help="result file (default bench/results/gpu_check[_quick].json)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    cfg = QUICK if args.quick else FULL
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if not args.quick and args.device == "auto" and device.type != "cuda":
        # `make bench` on a machine without a GPU: the full shapes on CPU would take long and measure nothing this
        # script is for, and must not replace the committed GPU figures (bench/run_all.py writes no file for it)
        skipped = {"bench": "gpu_check", "quick": False, "skipped": "no CUDA device: run it on a GPU machine, "
                   "or --quick (tiny shapes, any device), or --device cpu to force the full shapes on CPU"}
        print(json.dumps(skipped), flush=True)
        return skipped
    torch.manual_seed(0)
    result: dict = {"bench": "gpu_check", "quick": args.quick, "device": device.type,
                    "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor(),
                    "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
                    "weights": "random (production shapes; no model hub reachable)"}
    import transformers

    result["transformers"] = transformers.__version__
    for batch in cfg["batch"]:
        for dtype in ("fp32", "bf16"):
            result[f"student_steps_per_s_b{batch}_{dtype}"] = round(student_steps(cfg, device, batch, dtype), 2)
            result[f"cross_steps_per_s_b{batch}_{dtype}"] = round(cross_steps(cfg, device, batch, dtype), 2)
        for what in ("student", "cross"):
            result[f"{what}_bf16_speedup_b{batch}"] = round(
                result[f"{what}_steps_per_s_b{batch}_bf16"] / result[f"{what}_steps_per_s_b{batch}_fp32"], 2)
    for dtype in ("fp32", "bf16"):
        result[f"judge_prompts_per_s_{dtype}"] = round(judge_prompts(cfg, device, dtype), 1)
    result["judge_bf16_speedup"] = round(result["judge_prompts_per_s_bf16"] / result["judge_prompts_per_s_fp32"], 2)
    if device.type == "cuda":
        torch.cuda.empty_cache()

    rng = np.random.default_rng(0)
    items, kps = unit_rows(rng, cfg["items"], 64), unit_rows(rng, cfg["keyphrases"], 64)
    k = cfg["k"]
    topk_torch(items[:cfg["chunk"]], kps, k, cfg["chunk"], device)  # warm-up
    ids_t, secs_t = topk_torch(items, kps, k, cfg["chunk"], device)
    result.update({"topk_items": cfg["items"], "topk_keyphrases": cfg["keyphrases"], "topk_k": k,
                   "topk_torch_fp16_s": seconds(secs_t)})
    try:
        sample = cfg["faiss_sample"]
        ids_f, secs_f = topk_faiss(items[:sample], kps, k)
        faiss_full = secs_f * cfg["items"] / sample
        result.update({"topk_faiss_cpu_sample_items": sample, "topk_faiss_cpu_sample_s": seconds(secs_f),
                       "topk_faiss_cpu_s_scaled": seconds(faiss_full),
                       "topk_faiss_cpu_threads": int(__import__("faiss").omp_get_max_threads()),
                       "topk_speedup_torch_vs_faiss": round(faiss_full / secs_t, 2),
                       "topk_fp16_recall_at_k": round(recall_at_k(ids_t[:sample], ids_f), 4)})
    except ImportError as exc:
        result["topk_faiss_cpu"] = f"skipped: {exc}"

    out = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        "gpu_check_quick.json" if args.quick else "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
