"""Run an exported tower with ONNX Runtime: tokenise, batch (sorted by length), embed.

One session per tower per process (``get_tower`` caches them), so a Spark Python worker loads the
model once and reuses it for every batch of every task it runs. CUDA is used when ONNX Runtime has
the CUDA provider (``onnxruntime-gpu``) and a GPU is visible; otherwise the CPU provider.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_CACHE: dict[tuple, "OnnxTower"] = {}
_LOCK = threading.Lock()


class OnnxTower:
    """An exported tower directory (``model.onnx`` [+ ``model.int8.onnx``], tokenizer, ``tower.json``).

    Raises DataError (exit 3) when ``model_file`` or ``tower.json`` is missing; KeyError when ``tower.json``
    lacks ``dim`` or ``max_len``; ONNX Runtime errors for a corrupt graph."""

    def __init__(self, tower_dir: str | Path, model_file: str = "model.onnx", device: str = "auto", threads: int = 0):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        from keyphrase_pipeline.models.devices import check_session_providers, onnx_providers

        self.dir = Path(tower_dir)
        meta_path = self.dir / "tower.json"
        if not (self.dir / model_file).exists() or not meta_path.exists():
            from keyphrase_pipeline.core.errors import DataError

            raise DataError(f"no exported tower at {self.dir} (missing {model_file} or tower.json): run `kp export`")
        self.meta = json.loads(meta_path.read_text())
        self.dim = int(self.meta["dim"])
        self.max_len = int(self.meta["max_len"])
        self.output = self.meta.get("output", "sentence_embedding")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.dir))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.dir / model_file), sess_options=opts, providers=onnx_providers(device))
        check_session_providers(self.session.get_providers(), device)  # CUDA asked for, CUDA got
        self.model_file = model_file

    def _run(self, texts: list[str]):
        import numpy as np

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="np")
        feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
        return self.session.run([self.output], feeds)[0]

    def embed(self, texts, batch_size: int = 64, sort_by_length: bool = True):
        """``texts`` -> float32 array ``(n, dim)``, rows in input order. Sorting by length cuts padding.

        None becomes ""; texts longer than ``max_len`` tokens are truncated. Rows are the graph's output: for
        ``kp export`` towers, L2-normalised (inner product = cosine). ``(0, dim)`` for no texts."""
        import numpy as np

        texts = ["" if t is None else str(t) for t in texts]
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable") if sort_by_length else np.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            out[idx] = self._run([texts[i] for i in idx])
        return out


def get_tower(tower_dir: str | Path, model_file: str = "model.onnx", device: str = "auto", threads: int = 0) -> OnnxTower:
    """The process-wide session for this tower file (created on first use; a file rewritten in place gets a
    new one). Raises what ``OnnxTower`` raises (DataError when the export is missing)."""
    path = Path(tower_dir).resolve()
    f = path / model_file
    stamp = f.stat().st_mtime_ns if f.exists() else 0  # a re-export in place gets a fresh session
    key = (str(path), model_file, device, threads, stamp)
    with _LOCK:
        tower = _CACHE.get(key)
        if tower is None:
            tower = OnnxTower(tower_dir, model_file=model_file, device=device, threads=threads)
            _CACHE[key] = tower
            log.info("loaded ONNX tower %s/%s with %s", tower_dir, model_file, tower.session.get_providers())
        return tower


def clear_cache() -> None:
    """Drop every cached tower session of this process (the next ``get_tower`` loads again)."""
    with _LOCK:
        _CACHE.clear()
