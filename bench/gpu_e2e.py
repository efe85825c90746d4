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
  ``models.devices.faiss_on_device``, then ``models.topk.search_batch``).

The CPU baseline runs the same code on the CPU on a share of the work (1% at full size, ``FULL["cpu_share"]``),
reported in the same unit.
Not here yet: the judge at a 1B-8B shape (it needs a chat tokenizer the GPU machine can be given offline).
``--quick`` runs tiny shapes on the CPU in seconds: ``make test`` runs it (tests/bench/test_gpu_e2e.py), so the
script cannot rot. Writes ``bench/results/gpu_e2e.json`` (``gpu_e2e_quick.json`` for --quick, git-ignored) or
``--out``.

    python bench/gpu_e2e.py --device cuda        # on a GPU worker: real encoder, 300 steps, 1M titles, 1M x 100k
    python bench/gpu_e2e.py --quick              # tiny, on the CPU
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
        "batch": 256, "cpu_share": 0.01}
QUICK = {"steps": 4, "pairs": 300, "titles": 2000, "items": 3000, "keyphrases": 500, "k": 10, "batch": 64,
         "cpu_share": 0.5}


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
    """Steps/s of train_cross.run then train_bi.run (distilling from that cross-encoder) on ``labels``."""
    from keyphrase_pipeline.stages import train_bi, train_cross

    ds = "2026-10-10"
    cross = train_cross.run(settings, ds, labels=labels, out=str(work / f"cross-{tag}"))
    bi = train_bi.run(settings, ds, labels=labels, cross=cross["path"], out=str(work / f"student-{tag}"),
                      label_mix="llm+kd")
    from keyphrase_pipeline.models.devices import precision_name

    return {"train_cross": cross["steps"] / max(cross["train_seconds"], 1e-9), "cross_steps": cross["steps"],
            "precision": precision_name(settings.train.device),
            "train_bi": bi["steps"] / max(bi["train_seconds"], 1e-9), "bi_steps": bi["steps"],
            "student": str(Path(bi["path"]) / "model")}


def time_embedding(student: str, titles: list[str], device: str, dim: int, batch: int, work: Path) -> dict:
    """Titles/s through the exported ONNX item tower (providers for ``device``) and through torch on ``device``."""
    from keyphrase_pipeline.models.bi_encoder import encode_items, load_student
    from keyphrase_pipeline.models.devices import ort_providers
    from keyphrase_pipeline.models.onnx_export import export_tower
    from keyphrase_pipeline.models.onnx_tower import OnnxTower

    tower_dir = work / f"tower-{dim}"
    if not (tower_dir / "model.onnx").exists():
        export_tower(student, tower_dir, dim, 64)
    # a GPU machine whose onnxruntime is the CPU-only build still gives the torch figure; the ONNX one says where it ran
    ort_device = device if device == "cpu" or "CUDAExecutionProvider" in ort_providers() else "cpu"
    tower = OnnxTower(tower_dir, device=ort_device)
    t0 = time.perf_counter()
    for i in range(0, len(titles), batch):
        tower.embed(titles[i:i + batch])
    onnx_s = time.perf_counter() - t0
    model = load_student(student, device)
    t0 = time.perf_counter()
    encode_items(model, titles, [""] * len(titles), dim=dim, batch_size=batch)
    torch_s = time.perf_counter() - t0
    return {"embed_onnx": len(titles) / onnx_s, "embed_torch": len(titles) / torch_s,
            "providers": tower.session.get_providers()}


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
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    from keyphrase_pipeline.models.devices import resolve_device, torch_cuda
    from keyphrase_pipeline.synthetic.synth_labels import world_pairs

    if not args.quick and args.device is None and not torch_cuda()["available"]:
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
            base = args.base
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
        cpu_steps = max(2, int(cfg["steps"] * cfg["cpu_share"]))
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
                    line = {**common, "figure": figure, "value": round(dev[figure], 2), "unit": unit,
                            "cpu_value": round(cpu[figure], 2),
                            "speedup": round(dev[figure] / max(cpu[figure], 1e-9), 2), **extra.get(figure, {})}
                print(json.dumps(line), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                lines.append(line)
            return dev

        trained = {}

        def training():
            train = time_training(s_dev, labels, work, "dev")
            trained["student"] = train["student"]
            cpu = time_training(s_cpu, labels, work, "cpu") if baseline else train
            return train, cpu, {"train_cross": {"steps": train["cross_steps"], "precision": train["precision"]},
                                "train_bi": {"steps": train["bi_steps"], "precision": train["precision"]}}

        def embedding():
            emb = time_embedding(trained["student"], titles, device, dim, cfg["batch"], work)
            cpu = time_embedding(trained["student"], titles[:n_cpu], "cpu", dim, cfg["batch"], work) if baseline else emb
            return emb, cpu, {"embed_onnx": {"titles": len(titles), "providers": emb["providers"]},
                              "embed_torch": {"titles": len(titles)}}

        def topk():
            top = time_topk(cfg["items"], cfg["keyphrases"], dim, cfg["k"], device, cfg["batch"])
            cpu = time_topk(max(cfg["batch"], int(cfg["items"] * cfg["cpu_share"])), cfg["keyphrases"], dim, cfg["k"],
                            "cpu", cfg["batch"]) if baseline else top
            return top, cpu, {"topk": {"items": cfg["items"], "keyphrases": cfg["keyphrases"], "k": cfg["k"],
                                       "dim": dim, "engine": top["engine"]}}

        emit((("train_cross", "steps/s"), ("train_bi", "steps/s")), training)
        if trained:
            emit((("embed_onnx", "titles/s"), ("embed_torch", "titles/s")), embedding)
        emit((("topk", "items/s"),), topk)
    print(json.dumps({"bench": "gpu_e2e", "quick": args.quick, "device": device, "results_file": str(out)}), flush=True)
    return lines


if __name__ == "__main__":
    main()
