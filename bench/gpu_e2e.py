"""The project's own code on a device: the stages' training, the towers' inference and the top-K search, each timed
on ``--device`` (cuda on a GPU worker) with the CPU baseline of the same code beside it. It replaces the proxy
``bench/gpu_check.py`` (random-weight shapes in hand-written loops) as the evidence of what runs on a GPU.

Figures, one JSON line each (``{"figure", "device", "value", "unit", "cpu_value", "speedup", ...}``):

- ``train_cross`` / ``train_bi``: optimizer steps/s of ``stages.train_cross.run`` and ``stages.train_bi.run`` on the
  judged pairs of the development world ``listing`` (``synthetic.synth_labels``), from ``--base`` (the real
  all-MiniLM-L6-v2 by default; ``--quick``: a tiny random encoder), ``--steps`` steps each;
- ``embed_onnx``: titles/s through the exported item tower (``models.onnx_export.export_tower``,
  ``models.onnx_tower.OnnxTower`` with the providers ``models.devices.onnx_providers`` picks: ONNX Runtime's CUDA
  provider where ``onnxruntime-gpu`` is installed);
- ``embed_torch``: titles/s of ``models.bi_encoder.encode_items`` on the device (the torch path);
- ``topk``: items/s of exact top-K (``models.ann.build_index("Flat")`` on the device through
  ``models.devices.faiss_on_device``, then ``models.topk.search_batch``);
- ``judge_1b`` / ``judge_8b``: pairs/s of the transformers judge (``labels.judges.transformers_judge``: the
  project's prompts, one forward pass per batch reading the yes/no logits) on a **random-weight** Llama of the
  Llama-3.2-1B / Llama-3.1-8B shape in bf16, with the encoder's WordPiece tokenizer (no chat template): throughput
  only, its answers mean nothing. The 8B shape has no CPU baseline (``cpu_value`` null: 32 GB of fp32 weights).

The CPU baseline runs the same code on the CPU on a share of the work (1% at full size, ``FULL["cpu_share"]``; 8
training steps at least), reported in the same unit. Training rates are marginal: each side trains n/2 then n steps
and the rate is that of the second half, so the trainer's set-up does not slow the short CPU run.
``--quick`` runs tiny shapes on the CPU in seconds: ``make test`` runs it (tests/bench/test_gpu_e2e.py), so the
script cannot rot. Writes ``bench/results/gpu_e2e.json`` (``gpu_e2e_quick.json`` for --quick, git-ignored) or
``--out``.

    python bench/gpu_e2e.py --device cuda        # on a GPU worker: real encoder, 300 steps, 1M titles, 1M x 100k
    python bench/gpu_e2e.py --quick              # tiny, on the CPU
    python bench/gpu_e2e.py --prepare-carry var/gpu_carry   # here: an fp16 copy of the encoder (~44 MB) to carry

A GPU machine without a package registry gets the project's tree plus ``var/gpu_carry`` (the fp16 encoder: the
wheel's fp32 one is 83 MB) and runs ``python bench/gpu_e2e.py --device cuda --base var/gpu_carry/encoder``; the
timing runs on an fp32 copy made from it there (the trainers' own precision choice then applies).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = {"steps": 300, "pairs": 8000, "titles": 1_000_000, "items": 1_000_000, "keyphrases": 100_000, "k": 20,
        "batch": 256, "cpu_share": 0.01, "judges": {"1b": 4096, "8b": 2048}, "judge_batch": 64, "judge_cpu": 16}
QUICK = {"steps": 4, "pairs": 300, "titles": 2000, "items": 3000, "keyphrases": 500, "k": 10, "batch": 64,
         "cpu_share": 0.5, "judges": {"tiny": 24}, "judge_batch": 8, "judge_cpu": 8}

# Llama shapes (hidden, layers, attention heads, key/value heads, MLP width): Llama-3.2-1B and Llama-3.1-8B as
# published in their configs; "tiny" for the CPU smoke. The CPU baseline is skipped above CPU_JUDGE_MAX.
JUDGE_SHAPES = {"tiny": (64, 2, 4, 4, 128), "1b": (2048, 16, 32, 8, 8192), "8b": (4096, 32, 32, 8, 14336)}
CPU_JUDGE_MAX = ("tiny", "1b")


def prepare_carry(base: str, out: Path) -> Path:
    """An fp16 copy of the encoder ``base`` at ``out/encoder`` (sentence-transformers folder, ~44 MB for MiniLM),
    small enough to carry to a GPU machine with the project. Returns that folder."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(base, device="cpu")
    model.to(torch.float16)
    target = out / "encoder"
    model.save(str(target))
    return target


def fp32_base(base: str, work: Path) -> str:
    """``base`` itself when its weights are fp32, else an fp32 copy of it in ``work`` (an fp16 carry is upcast so
    the stages start from what they would load in production)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(base, device="cpu")
    if all(p.dtype == torch.float32 for p in model.parameters()):
        return base
    model.to(torch.float32)
    target = work / "base-fp32"
    model.save(str(target))
    return str(target)


def settings_for(work: Path, base: str, device: str, steps: int, quick: bool):
    """Settings for timing: the stages' own recipe, step caps ``steps``, no held-out evaluation (steps only)."""
    from keyphrase_pipeline.core.settings import load_settings

    train = {"base_model": base, "device": device, "cross_max_steps": steps, "bi_max_steps": steps, "epochs": 100.0,
             "bi_epochs": 100.0, "evals_per_epoch": 0, "min_rows": 20, "kd_list_ratio": 0.0, "kd_extra_ratio": 0.0,
             "cut_rotation": False}
    serve = {"device": device}
    if quick:
        train.update({"matryoshka_dims": [32, 16], "batch_size": 16, "max_seq_length": 24, "cross_max_length": 48})
        serve["dim"] = 16
    return load_settings(lake_root=str(work / "lake"), train=train, serve=serve)


def time_training(settings, labels: str, work: Path, tag: str) -> dict:
    """Seconds and steps of train_cross.run then train_bi.run (distilling from that cross-encoder) on ``labels``."""
    from keyphrase_pipeline.stages import train_bi, train_cross

    ds = "2026-10-10"
    cross = train_cross.run(settings, ds, labels=labels, out=str(work / f"cross-{tag}"))
    bi = train_bi.run(settings, ds, labels=labels, cross=cross["path"], out=str(work / f"student-{tag}"),
                      label_mix="llm+kd")
    from keyphrase_pipeline.models.devices import precision_name

    return {"cross_s": cross["train_seconds"], "cross_steps": cross["steps"], "bi_s": bi["train_seconds"],
            "bi_steps": bi["steps"], "precision": precision_name(settings.train.device),
            "student": str(Path(bi["path"]) / "model")}


def marginal_rates(short: dict, long: dict) -> dict:
    """Steps/s of the steps the longer run made beyond the shorter one: the trainer's set-up (the same in both runs)
    drops out, so a 3-step CPU baseline is not slowed by it beside a 300-step GPU run. Where the difference is not
    positive (a tiny run in the noise), the longer run's plain rate."""
    out = {}
    for name, key in (("train_cross", "cross"), ("train_bi", "bi")):
        steps = long[f"{key}_steps"] - short[f"{key}_steps"]
        seconds = long[f"{key}_s"] - short[f"{key}_s"]
        out[name] = steps / seconds if steps > 0 and seconds > 0 else long[f"{key}_steps"] / max(long[f"{key}_s"], 1e-9)
    return out


def time_embedding(student: str, titles: list[str], device: str, dim: int, batch: int, work: Path,
                   cpu_titles: int) -> dict:
    """Titles/s through the exported ONNX item tower (providers for ``device``; where ONNX Runtime has no CUDA here,
    on the CPU over ``cpu_titles`` titles) and through torch on ``device``."""
    from keyphrase_pipeline.models.bi_encoder import encode_items, load_student
    from keyphrase_pipeline.models.devices import ort_providers
    from keyphrase_pipeline.models.onnx_export import export_tower
    from keyphrase_pipeline.models.onnx_tower import OnnxTower

    tower_dir = work / f"tower-{dim}"
    if not (tower_dir / "model.onnx").exists():
        export_tower(student, tower_dir, dim, 64)
    # a GPU machine whose onnxruntime is the CPU-only build still gives the torch figure; the ONNX one says where it
    # ran, and on the CPU it times the CPU share of the titles (1M titles through 2-16 cores would take the run)
    ort_device = device if device == "cpu" or "CUDAExecutionProvider" in ort_providers() else "cpu"
    tower = OnnxTower(tower_dir, device=ort_device)
    onnx_titles = titles if ort_device == device else titles[:cpu_titles]
    t0 = time.perf_counter()
    for i in range(0, len(onnx_titles), batch):
        tower.embed(onnx_titles[i:i + batch])
    onnx_s = time.perf_counter() - t0
    model = load_student(student, device)
    t0 = time.perf_counter()
    encode_items(model, titles, [""] * len(titles), dim=dim, batch_size=batch)
    torch_s = time.perf_counter() - t0
    return {"embed_onnx": len(onnx_titles) / onnx_s, "embed_torch": len(titles) / torch_s,
            "providers": tower.session.get_providers(), "onnx_titles": len(onnx_titles)}


def time_judge(shape: str, device: str, tokenizer_dir: str, prompts: list[str], batch: int) -> dict:
    """Pairs/s of ``TransformersJudge.score_prompts`` on a random-weight Llama of ``JUDGE_SHAPES[shape]`` built on
    ``device`` (bf16 on CUDA where supported, else fp16; fp32 on the CPU, as the judge loads a real model), after one
    warm-up batch. Throughput only: the weights are random."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from keyphrase_pipeline.core.settings import load_settings
    from keyphrase_pipeline.labels.judges.transformers_judge import TransformersJudge

    hidden, layers, heads, kv, mlp = JUDGE_SHAPES[shape]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    dtype = torch.float32
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    torch.manual_seed(0)
    with torch.device(device):  # weights initialised where they run: an 8B fp32 init on the host takes minutes
        model = LlamaForCausalLM(cfg).to(dtype)
    settings = load_settings(judge={"backend": "transformers", "device": device, "batch_size": batch})
    judge = TransformersJudge(settings, model=model, tokenizer=tok)
    judge.score_prompts(prompts[:batch])  # warm-up: kernels, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    judge.score_prompts(prompts)
    seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    runs_on = judge.runs_on
    judge.close()
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"pairs_per_s": len(prompts) / seconds, "params": params, "runs_on": runs_on}


class TorchFlatIndex:
    """Exact inner-product search in torch on ``device`` (chunked fp32 matmul + ``topk``), with FAISS's ``search`` and
    ``ntotal``, so the project's ``search_batch`` runs on it: the GPU path where FAISS has no GPU build. Not a
    project module yet: this measures whether the GPU worker should use it."""

    def __init__(self, vectors, device: str):
        import torch

        self.device = device
        self.x = torch.as_tensor(vectors, device=device)
        self.ntotal = len(vectors)

    def search(self, queries, k: int):
        import torch

        q = torch.as_tensor(queries, device=self.device)
        scores, ids = torch.topk(q @ self.x.T, min(k, self.ntotal), dim=1)
        return scores.float().cpu().numpy(), ids.cpu().numpy().astype("int64")


def time_topk(n_items: int, n_kps: int, dim: int, k: int, device: str, batch: int) -> dict:
    """Items/s of exact top-``k`` over ``n_kps`` keyphrases with the project's search: FAISS Flat on ``device``, or,
    where FAISS has no GPU, torch on ``device`` (``TorchFlatIndex``; the figure says which)."""
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.models.ann import build_index
    from keyphrase_pipeline.models.devices import faiss_on_device
    from keyphrase_pipeline.models.topk import KeyphraseTable, search_batch

    rng = np.random.default_rng(0)
    kps = rng.standard_normal((n_kps, dim)).astype("float32")
    kps /= np.linalg.norm(kps, axis=1, keepdims=True)
    from keyphrase_pipeline.models.devices import faiss_gpus

    if device == "cpu" or faiss_gpus() > 0:
        index, engine = faiss_on_device(build_index(kps, np.arange(n_kps, dtype=np.int64), "Flat"), device), "faiss"
    else:
        index, engine = TorchFlatIndex(kps, device), "torch (FAISS has no GPU here)"
    table = KeyphraseTable(pd.Series([f"kp {i}" for i in range(n_kps)], index=np.arange(n_kps, dtype=np.int64)))
    t0 = time.perf_counter()
    for start in range(0, n_items, batch * 64):
        n = min(batch * 64, n_items - start)
        items = rng.standard_normal((n, dim)).astype("float32")
        items /= np.linalg.norm(items, axis=1, keepdims=True)
        search_batch(index, table, np.arange(start, start + n), items, k, -1.0)
    return {"topk": n_items / (time.perf_counter() - t0), "engine": engine}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes on the CPU (the tests)")
    p.add_argument("--device", default=None, help="cuda (default on a GPU worker), cpu, auto")
    p.add_argument("--base", default=None, help="the encoder to start from (default: all-MiniLM-L6-v2; --quick: tiny)")
    p.add_argument("--out", default=None, help="result file (JSON lines)")
    p.add_argument("--baseline", action="store_true",
                   help="time the CPU baseline even when --device is cpu (the tests: every code path runs)")
    p.add_argument("--prepare-carry", metavar="DIR", default=None,
                   help="only write an fp16 copy of --base (default: all-MiniLM-L6-v2) to DIR/encoder and exit")
    args = p.parse_args(argv)
    from keyphrase_pipeline.core.errors import ConfigError

    try:
        return _main(args)
    except ConfigError as exc:  # a device this machine cannot give: the message, exit 2, no traceback
        print(f"gpu_e2e: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _main(args) -> list[dict]:
    if args.prepare_carry:
        from keyphrase_pipeline.models.base import default_encoder_path

        target = prepare_carry(args.base or default_encoder_path(), Path(args.prepare_carry))
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        line = {"bench": "gpu_e2e", "prepared": str(target), "bytes": size}
        print(json.dumps(line), flush=True)
        return [line]
    cfg = QUICK if args.quick else FULL
    from keyphrase_pipeline.models.devices import resolve_device, torch_cuda
    from keyphrase_pipeline.synthetic.synth_labels import world_pairs

    if not args.quick and args.device in (None, "auto") and not torch_cuda()["available"]:
        skipped = {"bench": "gpu_e2e", "quick": False, "skipped": "no CUDA device: run it on a GPU worker, or pass "
                   "--device cpu for the full sizes on the CPU"}
        print(json.dumps(skipped), flush=True)
        return [skipped]
    device = resolve_device(args.device or ("cpu" if args.quick else "cuda"), "--device")
    baseline = device != "cpu" or args.baseline
    lines = []
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / ("gpu_e2e_quick.json" if args.quick
                                                                        else "gpu_e2e.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kp-gpu-e2e-") as tmp:
        work = Path(tmp)
        if args.base:
            base = fp32_base(args.base, work)
        elif args.quick:
            from keyphrase_pipeline.models.tiny import build_tiny_encoder

            base = build_tiny_encoder(work / "tiny")
        else:
            from keyphrase_pipeline.models.base import default_encoder_path

            base = default_encoder_path()
        pairs = world_pairs("listing", n_pairs=cfg["pairs"])
        labels = str(work / "pairs.parquet")
        pairs.to_parquet(labels, index=False)
        s_dev = settings_for(work, base, device, cfg["steps"], args.quick)
        cpu_steps = max(8, int(cfg["steps"] * cfg["cpu_share"]))  # halves of 4 and 8 steps at least
        s_cpu = settings_for(work, base, "cpu", cpu_steps, args.quick)
        dim = s_dev.serve.dim
        titles = (pairs["title"].tolist() * (cfg["titles"] // len(pairs) + 1))[:cfg["titles"]]
        n_cpu = max(cfg["batch"], int(len(titles) * cfg["cpu_share"]))
        common = {"bench": "gpu_e2e", "quick": args.quick, "device": device, "torch": torch_cuda(),
                  "base": "tiny random encoder" if args.quick and not args.base else base,
                  "machine": f"{platform.machine()} {platform.node()}", "date": time.strftime("%Y-%m-%d")}
        out.write_text("")

        def emit(figures, measure):
            """Measure one group on the device and on the CPU; one line per figure, appended to ``out`` at once, so a
            later failure or timeout keeps what was measured. A group that cannot run here says why and the rest go on."""
            try:
                dev, cpu, extra = measure()
            except Exception as exc:  # a ConfigError (a device this machine cannot give), a missing module, ...
                dev, reason = None, f"{type(exc).__name__}: {exc}"[:500]
            for figure, unit in figures:
                if dev is None:
                    line = {**common, "figure": figure, "skipped": reason}
                else:
                    on_cpu = cpu.get(figure) if cpu else None  # None: no CPU baseline for this figure (said why)
                    line = {**common, "figure": figure, "value": round(dev[figure], 2), "unit": unit,
                            "cpu_value": None if on_cpu is None else round(on_cpu, 2),
                            "speedup": None if on_cpu is None else round(dev[figure] / max(on_cpu, 1e-9), 2),
                            **extra.get(figure, {})}
                print(json.dumps(line), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                lines.append(line)
            return dev

        trained = {}

        def training():
            # each side trains twice, n/2 and n steps; the rate is that of the second half (set-up excluded)
            half = time_training(settings_for(work, base, device, max(1, cfg["steps"] // 2), args.quick), labels, work,
                                 "dev-half")
            train = time_training(s_dev, labels, work, "dev")
            trained["student"] = train["student"]
            dev = marginal_rates(half, train)
            cpu = dev
            if baseline:
                cpu_half = time_training(settings_for(work, base, "cpu", max(1, cpu_steps // 2), args.quick), labels,
                                         work, "cpu-half")
                cpu = marginal_rates(cpu_half, time_training(s_cpu, labels, work, "cpu"))
            how = {"precision": train["precision"], "rate": "steps between a run of n/2 and one of n steps (set-up "
                   "excluded)", "cpu_steps": cpu_steps}
            return dev, cpu, {"train_cross": {"steps": train["cross_steps"], **how},
                              "train_bi": {"steps": train["bi_steps"], **how}}

        def embedding():
            emb = time_embedding(trained["student"], titles, device, dim, cfg["batch"], work, n_cpu)
            cpu = (time_embedding(trained["student"], titles[:n_cpu], "cpu", dim, cfg["batch"], work, n_cpu)
                   if baseline else emb)
            return emb, cpu, {"embed_onnx": {"titles": emb["onnx_titles"], "providers": emb["providers"]},
                              "embed_torch": {"titles": len(titles)}}

        def topk():
            top = time_topk(cfg["items"], cfg["keyphrases"], dim, cfg["k"], device, cfg["batch"])
            cpu = time_topk(max(cfg["batch"], int(cfg["items"] * cfg["cpu_share"])), cfg["keyphrases"], dim, cfg["k"],
                            "cpu", cfg["batch"]) if baseline else top
            return top, cpu, {"topk": {"items": cfg["items"], "keyphrases": cfg["keyphrases"], "k": cfg["k"],
                                       "dim": dim, "engine": top["engine"]}}

        from keyphrase_pipeline.core.settings import load_settings
        from keyphrase_pipeline.labels.judges.prompt import build_prompts

        prompts = build_prompts(pairs, load_settings())

        def judging(shape, n):
            def measure():
                asked = (prompts * (n // len(prompts) + 1))[:n]
                dev = time_judge(shape, device, base, asked, cfg["judge_batch"])
                cpu = None
                if baseline and shape in CPU_JUDGE_MAX:
                    cpu = time_judge(shape, "cpu", base, asked[:cfg["judge_cpu"]], min(cfg["judge_batch"], cfg["judge_cpu"]))
                figure = f"judge_{shape}"
                note = {"prompts": n, "batch": cfg["judge_batch"], "params": dev["params"], "runs_on": dev["runs_on"],
                        "weights": "random (throughput only)", "tokenizer": "the encoder's WordPiece, no chat template"}
                if cpu is None and baseline:
                    note["no_cpu_baseline"] = f"the {shape} shape in fp32 on the host is too large to time here"
                return ({figure: dev["pairs_per_s"]}, {figure: cpu["pairs_per_s"]} if cpu else None, {figure: note})
            return measure

        emit((("train_cross", "steps/s"), ("train_bi", "steps/s")), training)
        if trained:
            emit((("embed_onnx", "titles/s"), ("embed_torch", "titles/s")), embedding)
        emit((("topk", "items/s"),), topk)
        for shape, n in cfg["judges"].items():
            emit(((f"judge_{shape}", "pairs/s"),), judging(shape, n))
    print(json.dumps({"bench": "gpu_e2e", "quick": args.quick, "device": device, "results_file": str(out)}), flush=True)
    return lines


if __name__ == "__main__":
    main()
