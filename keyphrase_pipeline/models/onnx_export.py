"""Export a sentence-transformers encoder tower to one ONNX graph: ids + mask in, serving embedding out.

The graph does everything after tokenisation: the transformer, mean pooling over the attention mask,
L2 normalisation, the Matryoshka cut to ``dim`` and a second L2 normalisation after the cut, so any
ONNX runtime (ONNX Runtime in Spark, Triton) returns exactly what the trained model means without
extra Python. Batch and sequence axes are dynamic. The tokenizer is saved beside the graph.

We call ``torch.onnx.export`` directly: sentence-transformers' own ONNX backend needs ``optimum``,
which does not install beside transformers 5. The legacy TorchScript exporter (``dynamo=False``) is
used because it is quick and produces a plain graph ONNX Runtime's int8 quantiser handles well.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "sentence_embedding"  # "embedding" collides with an internal node name under dynamo=True
OPSET = 17

# Longest inputs each tower takes (tokens) when the model does not say (``tower_max_len``); capped by the
# model's position table. A student carries its training length (``train.max_seq_length``) and is served at it.
ITEM_MAX_LEN = 64
KEYPHRASE_MAX_LEN = 24

SAMPLE_TEXTS = [
    "apple iphone 13 pro max 256gb graphite unlocked [SEP] cell phones & smartphones",
    "vintage levis 501 jeans w32 l34 made in usa [SEP] men's jeans",
    "lego star wars millennium falcon 75192 sealed [SEP] lego complete sets & packs",
    "nike air jordan 1 retro high og chicago size 10 [SEP] athletic shoes",
    "kitchenaid artisan stand mixer 5 qt empire red [SEP] stand mixers",
    "iphone 13 case", "levis 501", "lego falcon", "jordan 1 chicago", "red stand mixer",
    "usb c charger 65w gan", "womens winter boots waterproof", "a", "",
]


def _torch_tower(model_dir: str, dim: int):
    """A torch module: (input_ids, attention_mask) -> cut, re-normalised ``dim``-d embedding (mean pooling, the
    student's rotation before its cut when it has one: ``models.cut_rotation``)."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_dir, device="cpu")
    transformer = st[0]
    hf = transformer.auto_model
    hidden = transformer.get_word_embedding_dimension()
    if dim > hidden:
        from keyphrase_pipeline.core.errors import ConfigError

        raise ConfigError(f"serve.dim={dim} is larger than the encoder's hidden size {hidden}")
    names = [type(m).__name__ for m in st]
    pooling = st[1] if len(st) > 1 else None
    mode = getattr(pooling, "pooling_mode_mean_tokens", True) if pooling is not None else True
    if not mode:
        from keyphrase_pipeline.core.errors import ConfigError

        raise ConfigError(f"only mean pooling is exported; the model's modules are {names}")

    from keyphrase_pipeline.models.cut_rotation import rotation_of

    rotation = rotation_of(st)  # the student's rotation before its cut (models.cut_rotation), or None

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = hf
            if rotation is not None:
                self.register_buffer("rotation", torch.tensor(rotation))
            else:
                self.rotation = None

        def forward(self, input_ids, attention_mask):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            tokens = out[0] if isinstance(out, tuple) else out.last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.rotation is not None:
                pooled = pooled @ self.rotation
            full = torch.nn.functional.normalize(pooled, p=2, dim=1)
            cut = full[:, :dim]
            return torch.nn.functional.normalize(cut, p=2, dim=1)

    tower = Tower().eval()
    return st, tower


def model_max_len(model_dir: str) -> int | None:
    """The length (tokens) the sentence-transformers model at ``model_dir`` truncates its inputs to
    (``max_seq_length``: in ``sentence_bert_config.json``, or saved as the tokenizer's ``model_max_length``);
    None when the directory says neither."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        path = Path(model_dir) / name
        value = json.loads(path.read_text()).get(key) if path.exists() else None
        if isinstance(value, (int, float)) and 0 < value < 1_000_000:  # HF writes 1e30 for "no limit"
            return int(value)
    return None


def tower_max_len(model_dir: str, tower: str) -> int:
    """Longest input of ``tower`` ('item' | 'keyphrase') in tokens.

    The item tower of a student this project trained (``kp_model.json`` of kind ``bi``) serves at the student's
    own length (``model_max_len``: its ``train.max_seq_length``), so an embedding served is the embedding
    trained and scored (``kp score``); any other model (a base encoder, whose own length is 256 or 512) at
    ``ITEM_MAX_LEN``. The keyphrase tower takes at most ``KEYPHRASE_MAX_LEN`` (queries are short). Both are
    capped by ``max_position_embeddings`` of the model's ``config.json`` (512 when absent). Any other ``tower``
    name gets the keyphrase length."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text()) if (Path(model_dir) / "config.json").exists() else {}
    cap = int(cfg.get("max_position_embeddings", 512))
    from keyphrase_pipeline.models.bi_encoder import read_marker

    student = read_marker(model_dir).get("kind") == "bi"
    own = model_max_len(model_dir) if student else None
    if tower == "item":
        want = own or ITEM_MAX_LEN
    else:
        want = min(KEYPHRASE_MAX_LEN, own) if own else KEYPHRASE_MAX_LEN
    return min(want, cap)


def export_tower(model_dir: str, out_dir: str | Path, dim: int, max_len: int) -> Path:
    """Write ``out_dir/model.onnx`` + tokenizer files + ``tower.json``; return ``out_dir``.

    The graph takes int64 ``input_ids`` and ``attention_mask`` of shape ``(batch, sequence)`` and returns
    float32 ``sentence_embedding`` of shape ``(batch, dim)``, rows L2-normalised after the cut. Raises
    ConfigError (exit 2) when ``dim`` exceeds the encoder's hidden size or the model does not mean-pool;
    exporter errors (torch.onnx) propagate."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    st, tower = _torch_tower(model_dir, dim)
    tok = st.tokenizer
    sample = tok(["hello world", "a longer example sentence"], padding=True, return_tensors="pt")
    args = (sample["input_ids"].to(torch.int64), sample["attention_mask"].to(torch.int64))
    with torch.no_grad():
        torch.onnx.export(
            tower, args, str(out / "model.onnx"), input_names=list(INPUTS), output_names=[OUTPUT],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          OUTPUT: {0: "batch"}},
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
    tok.model_max_length = max_len
    tok.save_pretrained(str(out))
    meta = {"dim": dim, "max_len": max_len, "inputs": list(INPUTS), "output": OUTPUT, "opset": OPSET,
            "source": str(model_dir)}
    (out / "tower.json").write_text(json.dumps(meta, indent=2))
    log.info("exported tower to %s (dim %d, max_len %d)", out, dim, max_len)
    return out


def copy_tower(src: Path, dst: Path, max_len: int) -> Path:
    """Copy the exported tower ``src`` to ``dst`` with tokenizer length ``max_len`` (same graph: the towers share
    one encoder); returns ``dst``. FileExistsError when ``dst`` exists."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "tower.json").read_text())
    meta["max_len"] = max_len
    (dst / "tower.json").write_text(json.dumps(meta, indent=2))
    cfg_path = dst / "tokenizer_config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        cfg["model_max_length"] = max_len
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return dst


def torch_embed(model_dir: str, texts: list[str], dim: int, max_len: int, batch_size: int = 64):
    """Reference embeddings the way a user would get them: SentenceTransformer.encode, cut, re-normalised.

    Returns float32 ``np.ndarray`` of shape ``(len(texts), dim)``, rows L2-normalised (CPU, ``max_len`` tokens)."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_dir, device="cpu")
    st.max_seq_length = max_len
    full = st.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    cut = full[:, :dim].astype(np.float32)
    return cut / np.clip(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12, None)


def compare(a, b) -> dict:
    """Max abs difference and per-row cosine (mean, min) between two embedding matrices.

    ``a`` and ``b``: arrays of the same shape ``(n, d)``. Returns ``{"max_abs_diff", "cos_mean", "cos_min"}``
    as floats (0.0 and 1.0 for empty input). Raises DataError (exit 3) when the shapes differ."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        from keyphrase_pipeline.core.errors import DataError

        raise DataError(f"embedding shapes differ: {a.shape} vs {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.clip(na * nb, 1e-12, None)
    return {"max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0,
            "cos_mean": float(cos.mean()) if len(cos) else 1.0,
            "cos_min": float(cos.min()) if len(cos) else 1.0}


def topk_overlap(items_a, kps_a, items_b, kps_b, k: int) -> float:
    """Mean share of the exact top-k keyphrases (under embeddings a) that embeddings b also retrieve.

    ``items_*``: ``(n_items, d)``, ``kps_*``: ``(n_keyphrases, d)`` arrays, rows L2-normalised (inner product
    ranks). ``k`` is clipped to ``[1, n_keyphrases]``. Returns a float in [0, 1]; NaN (numpy warning) for no items."""
    import numpy as np

    k = max(1, min(k, len(kps_a)))
    ta = np.argsort(-(items_a @ kps_a.T), axis=1)[:, :k]
    tb = np.argsort(-(items_b @ kps_b.T), axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)]))


def quantize_int8(fp32_path: str | Path, int8_path: str | Path) -> Path:
    """Dynamic int8 with per-channel weight scales (per-tensor loses too much on this model).

    Reads the fp32 graph at ``fp32_path``, writes ``int8_path``, returns it. Quantiser errors propagate."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
    return Path(int8_path)


def triton_config(name: str, dim: int, max_batch_size: int = 256) -> str:
    """``config.pbtxt`` for Triton's onnxruntime backend with dynamic batching."""
    return f"""name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch_size}
input [
  {{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }},
  {{ name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] }}
]
output [
  {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ {dim} ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
instance_group [ {{ kind: KIND_AUTO count: 1 }} ]
"""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path``, read in ``chunk``-byte blocks (OSError when it cannot be read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
