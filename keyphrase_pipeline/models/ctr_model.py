"""The CTR model: expected click-through of an (item, keyphrase) pair from IDs, distilled semantics, semantic IDs and
an optional image vector, with a mixture of de-correlated experts as its head.

Inputs of one pair (each part switchable, ``CtrConfig``):

* **IDs**: the item and keyphrase ids hashed into ``id_buckets`` learned vectors each (``id_bucket``): what the
  model memorises of pairs with history.
* **Semantics**: the champion student's item and keyphrase embeddings (``serve.dim``, L2-normalised), their
  element-wise product and cosine, projected to ``semantic_dim`` (after Meituan's multi-level deep-semantic CTR
  model, which feeds a distilled LLM student's semantics to a light CTR model).
* **Semantic IDs**: residual-quantisation codes of both embeddings (``models.semantic_ids``), one learned vector
  per (level, code), summed over levels: a new item shares what items with its codes learned.
* **Image**: an optional per-item vector (``raw/item_images``), compressed to ``image_compressed_dim`` by one layer
  *before* it is fused (early compression, as in the multimodal CTR work the design follows); items without one
  get zeros and a "no image" flag.
* **Position** (training only): a learned bias per display position added to the logit (a shallow position
  tower), so the rest of the model learns position-free effects; predictions are made at ``reference_position``.

Head: ``experts`` small MLPs over the fused features, mixed by a softmax gate; with ``experts`` = 1, one MLP. The
cross-expert de-correlation loss (``decorrelation_loss``) pushes the experts' outputs apart (D-MoE, Wang et al.
2025, "Enhancing CTR Prediction with De-correlated Expert Networks", arXiv 2505.17925; the exact form here is ours:
the mean squared Pearson correlation between pairs of experts' logits over a batch).

Training loss: the binomial log-loss of (clicks, impressions) rows (``binomial_log_loss``), i.e. each impression
is one Bernoulli trial, so a row with 1,000 impressions weighs 1,000 times one with 1.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.core.hashing import splitmix64

CONFIG_FILE = "ctr_config.json"
WEIGHTS_FILE = "ctr_model.pt"
ONNX_FILE = "ctr_model.onnx"
# ONNX input names, in this order (only the parts a config uses are inputs)
INPUTS = ("item_bucket", "keyphrase_bucket", "item_vec", "keyphrase_vec", "item_codes", "keyphrase_codes", "image",
          "has_image")


@dataclasses.dataclass(frozen=True)
class CtrConfig:
    """The architecture of one CTR model (saved beside its weights as ``ctr_config.json``)."""

    use_ids: bool = True
    use_semantics: bool = True
    use_semantic_ids: bool = True
    use_image: bool = False
    emb_dim: int = 64  # the student's serve.dim
    image_dim: int = 0  # length of the image vectors (0: no image input)
    id_buckets: int = 1 << 18
    id_dim: int = 16
    semantic_dim: int = 32
    sid_levels: int = 3
    sid_codes: int = 64  # 2 ** sid_bits
    sid_dim: int = 16
    image_compressed_dim: int = 4
    hidden: int = 64
    experts: int = 4
    max_position: int = 20
    reference_position: int = 1

    def __post_init__(self):
        if not (self.use_ids or self.use_semantics or self.use_semantic_ids or self.use_image):
            raise ConfigError("the CTR model needs at least one input: ctr_model.use_ids, use_semantics, "
                              "use_semantic_ids or use_image")
        if self.use_image and self.image_dim <= 0:
            raise ConfigError("ctr_model.use_image needs image vectors (raw/item_images) of a known length")
        if self.experts < 1 or not 1 <= self.reference_position <= self.max_position:
            raise ConfigError(f"ctr_model: experts >= 1 and 1 <= reference_position <= max_position, got "
                              f"{self.experts}, {self.reference_position}, {self.max_position}")

    def inputs(self) -> list[str]:
        """The model's input names (``INPUTS`` order) for this configuration."""
        names = []
        if self.use_ids:
            names += ["item_bucket", "keyphrase_bucket"]
        if self.use_semantics:
            names += ["item_vec", "keyphrase_vec"]
        if self.use_semantic_ids:
            names += ["item_codes", "keyphrase_codes"]
        if self.use_image:
            names += ["image", "has_image"]
        return names

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CtrConfig:
        return cls(**json.loads(text))


def id_bucket(ids: np.ndarray, buckets: int, salt: int) -> np.ndarray:
    """int64 ids -> int64 buckets in ``[0, buckets)`` (splitmix64 of ``id ^ salt``: stable across runs and machines,
    unlike Python's ``hash``)."""
    ids = np.asarray(ids, dtype=np.int64)
    z = splitmix64(ids ^ np.int64(salt))
    return (z % np.uint64(buckets)).astype(np.int64).reshape(ids.shape)


ITEM_SALT, KEYPHRASE_SALT = 0x1DEA, 0x5EED


def _torch():
    import torch

    return torch


def build_model(cfg: CtrConfig, seed: int = 0):
    """A ``CtrModel`` (torch ``nn.Module``) for ``cfg``, initialised with ``seed``."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)

    class CtrModel(nn.Module):
        """forward(inputs: dict of tensors, position: LongTensor (B,) or None) -> (logit (B,), expert logits (B, E)).

        Input shapes (B rows): ``item_bucket``/``keyphrase_bucket`` int64 (B,); ``item_vec``/``keyphrase_vec``
        float32 (B, emb_dim); ``item_codes``/``keyphrase_codes`` int64 (B, sid_levels); ``image`` float32
        (B, image_dim); ``has_image`` float32 (B,) in {0, 1}. ``position`` None = ``reference_position``."""

        def __init__(self):
            super().__init__()
            self.cfg = cfg
            width = 0
            if cfg.use_ids:
                self.item_id = nn.Embedding(cfg.id_buckets, cfg.id_dim)
                self.keyphrase_id = nn.Embedding(cfg.id_buckets, cfg.id_dim)
                nn.init.normal_(self.item_id.weight, std=0.01)
                nn.init.normal_(self.keyphrase_id.weight, std=0.01)
                width += 2 * cfg.id_dim
            if cfg.use_semantics:
                self.semantic = nn.Sequential(nn.Linear(3 * cfg.emb_dim + 1, cfg.semantic_dim), nn.ReLU())
                width += cfg.semantic_dim
            if cfg.use_semantic_ids:
                self.item_sid = nn.Embedding(cfg.sid_levels * cfg.sid_codes, cfg.sid_dim)
                self.keyphrase_sid = nn.Embedding(cfg.sid_levels * cfg.sid_codes, cfg.sid_dim)
                nn.init.normal_(self.item_sid.weight, std=0.01)
                nn.init.normal_(self.keyphrase_sid.weight, std=0.01)
                self.register_buffer("sid_offset", torch.arange(cfg.sid_levels, dtype=torch.long) * cfg.sid_codes,
                                     persistent=False)
                width += 2 * cfg.sid_dim
            if cfg.use_image:
                self.image = nn.Sequential(nn.Linear(cfg.image_dim, cfg.image_compressed_dim), nn.ReLU())
                width += cfg.image_compressed_dim + 1
            self.width = width
            self.experts = nn.ModuleList(
                nn.Sequential(nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))
                for _ in range(cfg.experts))
            self.gate = nn.Linear(width, cfg.experts) if cfg.experts > 1 else None
            self.position = nn.Embedding(cfg.max_position + 1, 1)
            nn.init.zeros_(self.position.weight)

        def features(self, x: dict):
            parts = []
            if cfg.use_ids:
                parts += [self.item_id(x["item_bucket"]), self.keyphrase_id(x["keyphrase_bucket"])]
            if cfg.use_semantics:
                a, b = x["item_vec"], x["keyphrase_vec"]
                prod = a * b
                parts.append(self.semantic(torch.cat([a, b, prod, prod.sum(-1, keepdim=True)], dim=-1)))
            if cfg.use_semantic_ids:
                parts += [self.item_sid(x["item_codes"] + self.sid_offset).sum(1),
                          self.keyphrase_sid(x["keyphrase_codes"] + self.sid_offset).sum(1)]
            if cfg.use_image:
                has = x["has_image"].unsqueeze(-1)
                parts += [self.image(x["image"]) * has, has]
            return torch.cat(parts, dim=-1)

        def forward(self, x: dict, position=None):
            h = self.features(x)
            outs = torch.cat([e(h) for e in self.experts], dim=-1)  # (B, E)
            if self.gate is None:
                logit = outs[:, 0]
            else:
                logit = (torch.softmax(self.gate(h), dim=-1) * outs).sum(-1)
            if position is None:
                position = torch.full_like(logit, cfg.reference_position, dtype=torch.long)
            logit = logit + self.position(position.clamp(1, cfg.max_position)).squeeze(-1)
            return logit, outs

    return CtrModel()


def binomial_log_loss(logit, clicks, impressions):
    """Mean log-loss per impression of rows of (clicks, impressions): ``sum_i -(c_i log p_i + (n_i - c_i) log(1 -
    p_i)) / sum_i n_i`` with ``p = sigmoid(logit)``, computed from the logits (numerically stable).

    Tensors of shape (B,), float; rows with 0 impressions count for nothing. Returns a scalar tensor (nats)."""
    torch = _torch()
    n = impressions.float()
    target = torch.where(n > 0, clicks.float() / n.clamp(min=1), torch.zeros_like(n))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target, weight=n, reduction="sum")
    return loss / n.sum().clamp(min=1)


def decorrelation_loss(expert_logits):
    """Cross-expert de-correlation: the mean over pairs i < j of the squared Pearson correlation between expert i's
    and expert j's outputs across the batch. ``expert_logits`` (B, E) float; 0 for E = 1 or B < 2. A pair where one
    expert is constant over the batch counts as uncorrelated."""
    torch = _torch()
    b, e = expert_logits.shape
    if e < 2 or b < 2:
        return expert_logits.sum() * 0.0
    centred = expert_logits - expert_logits.mean(0, keepdim=True)
    norm = centred.norm(dim=0).clamp(min=1e-8)
    corr = (centred.T @ centred) / (norm[:, None] * norm[None, :])
    i, j = torch.triu_indices(e, e, offset=1)
    return (corr[i, j] ** 2).mean()


def cross_expert_correlation(expert_logits: np.ndarray) -> float:
    """The mean absolute Pearson correlation between pairs of experts' outputs (the D-MoE paper's measure of how
    alike the experts are; ours in form): float in [0, 1], NaN for fewer than two experts."""
    x = np.asarray(expert_logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        return float("nan")
    c = np.corrcoef(x.T)
    iu = np.triu_indices(x.shape[1], 1)
    return float(np.nanmean(np.abs(c[iu])))


def weighted_auc(scores: np.ndarray, clicks: np.ndarray, impressions: np.ndarray) -> float:
    """AUC of ``scores`` over impressions: each row counts ``clicks`` times as a positive and ``impressions - clicks``
    times as a negative (scikit-learn's ``roc_auc_score`` with sample weights). NaN when one class is empty."""
    from sklearn.metrics import roc_auc_score

    clicks = np.asarray(clicks, dtype=np.float64)
    neg = np.asarray(impressions, dtype=np.float64) - clicks
    if clicks.sum() <= 0 or neg.sum() <= 0:
        return float("nan")
    s = np.asarray(scores, dtype=np.float64)
    y = np.r_[np.ones(len(s)), np.zeros(len(s))]
    w = np.r_[clicks, neg]
    keep = w > 0
    return float(roc_auc_score(y[keep], np.r_[s, s][keep], sample_weight=w[keep]))


def log_loss_per_impression(p: np.ndarray, clicks: np.ndarray, impressions: np.ndarray) -> float:
    """``binomial_log_loss`` in numpy on probabilities ``p`` (clipped to [1e-7, 1 - 1e-7]); nats per impression."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    c = np.asarray(clicks, dtype=np.float64)
    n = np.asarray(impressions, dtype=np.float64)
    return float(-(c * np.log(p) + (n - c) * np.log1p(-p)).sum() / max(n.sum(), 1.0))


def save(model, cfg: CtrConfig, folder: str | Path) -> None:
    """Weights (``ctr_model.pt``, a state dict) and ``ctr_config.json`` into ``folder``."""
    torch = _torch()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(cfg.to_json() + "\n")


def load(folder: str | Path):
    """(model in eval mode on the CPU, CtrConfig) saved by ``save``."""
    torch = _torch()
    folder = Path(folder)
    cfg = CtrConfig.from_json((folder / CONFIG_FILE).read_text())
    model = build_model(cfg)
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), cfg


def export_onnx(model, cfg: CtrConfig, path: str | Path) -> str:
    """The model at ``reference_position`` as ONNX (inputs ``cfg.inputs()``, dynamic batch; output ``p_click``
    float32 (B,)), for batch inference with ONNX Runtime like the towers. Returns the path."""
    torch = _torch()

    class AtReference(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, *args):
            logit, _ = self.inner(dict(zip(cfg.inputs(), args, strict=True)))
            return torch.sigmoid(logit)

    example = example_inputs(cfg, 2)
    names = cfg.inputs()
    torch.onnx.export(AtReference().eval(), tuple(torch.as_tensor(example[n]) for n in names), str(path),
                      input_names=names, output_names=["p_click"], dynamo=False, opset_version=17,
                      dynamic_axes={**{n: {0: "batch"} for n in names}, "p_click": {0: "batch"}})
    return str(path)


def example_inputs(cfg: CtrConfig, n: int) -> dict[str, np.ndarray]:
    """Zero-valued inputs of ``n`` rows with the right dtypes and shapes (export, tests)."""
    shapes = {"item_bucket": ((n,), np.int64), "keyphrase_bucket": ((n,), np.int64),
              "item_vec": ((n, cfg.emb_dim), np.float32), "keyphrase_vec": ((n, cfg.emb_dim), np.float32),
              "item_codes": ((n, cfg.sid_levels), np.int64), "keyphrase_codes": ((n, cfg.sid_levels), np.int64),
              "image": ((n, max(cfg.image_dim, 1)), np.float32), "has_image": ((n,), np.float32)}
    return {k: np.zeros(*shapes[k]) for k in cfg.inputs()}
