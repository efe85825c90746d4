"""Distillation losses for the bi-encoder student.

sentence-transformers has MSE-style (``CosineSimilarityLoss``) and rank-style (``CoSENTLoss``) losses for
regressing a similarity on a teacher score, but no Pearson-correlation loss, which the LLMDistill4Ads
paper found best (Table 1: rho 0.87 vs 0.78 for MSE). ``PearsonCorrelationLoss`` fills that gap; it is
a plain ``nn.Module`` with ``forward(features, labels)`` so it plugs into ``SentenceTransformerTrainer``
and can be wrapped in ``MatryoshkaLoss`` like any built-in loss.

Heavy imports (torch, sentence-transformers) happen at import of this module: import it only where
training or scoring happens, never from a DAG file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.core.settings import KD_LIST_LOSSES, KD_LOSSES


def pearson_r(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of two 1-d tensors (differentiable).

    r = sum((x - mean x) (y - mean y)) / (sqrt(sum (x - mean x)^2) * sqrt(sum (y - mean y)^2))

    ``eps`` keeps the gradient finite when one side is constant (r is then ~0).
    """
    x = x.float().view(-1)
    y = y.float().view(-1)
    xc = x - x.mean()
    yc = y - y.mean()
    return (xc * yc).sum() / (xc.norm() * yc.norm() + eps)


class PearsonCorrelationLoss(nn.Module):
    """Distil a teacher's scores into the student's cosine similarities through their Pearson correlation.

    For a batch of ``n`` (item, keyphrase) pairs with student cosine similarities
    ``s_i = cos(u_i, v_i)`` and teacher scores ``t_i`` (the cross-encoder's probabilities)::

        loss = 1 - r(s, t),   r(s, t) = cov(s, t) / (std(s) * std(t))

    so a perfectly correlated batch costs 0, an uncorrelated one 1 and an anti-correlated one 2. Unlike
    MSE it asks the student to *order and space* pairs like the teacher, up to an affine map, without
    forcing cosine values onto the teacher's probability scale (a bi-encoder cannot reach the
    cross-encoder's calibrated extremes). Reference: Dey et al., "LLMDistill4Ads", arXiv 2508.03628, §3.

    A batch of fewer than 2 pairs, or one whose teacher scores are all equal, carries no correlation
    signal: the loss is then 0 with a zero gradient (not NaN).

    Inputs: two text columns (item text, keyphrase text) and a float label column (teacher score).
    """

    def __init__(self, model, eps: float = 1e-8) -> None:
        super().__init__()
        self.model = model
        self.eps = eps

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        embeddings = embed_columns(self.model, list(sentence_features))
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        if len(embeddings) != 2:
            raise ValueError(f"PearsonCorrelationLoss expects 2 text columns, got {len(embeddings)}")
        scores = torch.cosine_similarity(embeddings[0], embeddings[1])
        return pearson_loss(scores, labels, self.eps)

    def get_config_dict(self) -> dict[str, Any]:
        return {"eps": self.eps}


def pearson_loss(scores: Tensor, targets: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - pearson_r(scores, targets)``; 0 (with zero gradient) for degenerate batches."""
    targets = targets.to(scores.device).float().view(-1)
    if scores.numel() != targets.numel():
        raise ValueError(f"{scores.numel()} scores but {targets.numel()} teacher scores")
    if scores.numel() < 2 or float(targets.std()) < eps:
        return scores.sum() * 0.0
    return 1.0 - pearson_r(scores, targets, eps)


def build_kd_loss(model, name: str) -> nn.Module:
    """The distillation loss named in ``settings.train.kd_loss``: pearson | mse | cosent."""
    from sentence_transformers.sentence_transformer import losses

    if name == "pearson":
        return PearsonCorrelationLoss(model)
    if name == "mse":  # MSE between cosine similarity and the teacher score
        return losses.CosineSimilarityLoss(model)
    if name == "cosent":
        return losses.CoSENTLoss(model)

    raise ConfigError(f"train.kd_loss {name!r}: choose from {', '.join(KD_LOSSES)}")


class ScaledCosine:
    """Cosine similarity of paired rows times ``scale``: the student's logit for a listwise softmax.

    A cosine lives in [-1, 1]; a softmax over such values is nearly flat, so the student could never match a
    teacher that is sure. Scaling the cosine (an inverse temperature, as MultipleNegativesRankingLoss's
    ``scale=20``) with the student temperature left at 1 keeps the loss free of the ``T**2`` factor that
    ``DistillKLDivLoss`` multiplies it by (0.0025 for a temperature of 0.05)."""

    __name__ = "scaled_cos_sim"

    def __init__(self, scale: float = 20.0) -> None:
        self.scale = float(scale)

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cosine_similarity(a, b, dim=-1) * self.scale

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}


class ListwisePearsonLoss(nn.Module):
    """A listwise loss within each list plus Pearson KD across every pair of the batch (ours).

    The list term (``DistillKLDivLoss`` or ``MarginMSELoss``, ``build_listwise_kd_loss``) teaches how one anchor's
    candidates compare, but both ignore any shift of a list's scores, so they say nothing about how one anchor's
    scores compare with another's; a served threshold and an item's top-K over many keyphrases need exactly that.
    The Pearson term (``PearsonCorrelationLoss``'s ``1 - r``) over all ``B x N`` student cosines of the batch against
    the teacher's P(relevant) (sigmoid of the label logits) teaches it, on the embeddings the list term already
    computed::

        loss = listwise(t, scale * cos) + pearson_weight * (1 - r(cos, sigmoid(t)))

    with ``listwise`` e.g. ``KL(softmax(t / T) || softmax(scale * cos))``. Input columns: the anchor and ``N``
    candidates; label: ``(B, N)`` teacher logits."""

    def __init__(self, model, listwise: nn.Module, pearson_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.listwise = listwise  # build_listwise_kd_loss's DistillKLDivLoss or MarginMSELoss (maybe tempered)
        self.pearson_weight = float(pearson_weight)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        return self.compute_loss_from_embeddings(embed_columns(self.model, list(sentence_features)), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        loss = self.listwise.compute_loss_from_embeddings(embeddings, labels)
        if self.pearson_weight:
            cos = torch.stack([torch.cosine_similarity(embeddings[0], e, dim=-1) for e in embeddings[1:]], dim=1)
            loss = loss + self.pearson_weight * pearson_loss(cos.reshape(-1), torch.sigmoid(labels.float()).reshape(-1))
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {**self.listwise.get_config_dict(), "pearson_weight": self.pearson_weight}


class TeacherTemperature(nn.Module):
    """Divides the teacher's logits (the labels) by ``temperature`` before a listwise loss sees them (ours): for
    losses without a teacher temperature of their own (``MarginMSELoss``, whose target margins it scales). Input
    columns and labels as the wrapped loss's.

    Args:
        loss: the wrapped loss; ``forward`` (what ``MatryoshkaLoss`` calls) and ``compute_loss_from_embeddings``
            both pass it the divided labels.
        temperature: > 0; 1 leaves the labels as they are."""

    def __init__(self, loss: nn.Module, temperature: float) -> None:
        super().__init__()
        self.loss = loss
        self.model = getattr(loss, "model", None)
        self.temperature = float(temperature)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        return self.loss(sentence_features, labels / self.temperature)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        return self.loss.compute_loss_from_embeddings(embeddings, labels / self.temperature)

    def get_config_dict(self) -> dict[str, Any]:
        return {**self.loss.get_config_dict(), "teacher_temperature": self.temperature}


def build_listwise_kd_loss(model, scale: float = 20.0, teacher_temperature: float = 1.0,
                           pearson_weight: float = 0.0, kind: str = "kl") -> nn.Module:
    """Listwise distillation over one anchor's candidates. Input columns: the anchor text and ``N`` candidate
    texts; label: the ``(N,)`` teacher logits per row (``(B, N)`` a batch). The student's logit for a candidate is
    ``scale x cosine(anchor, candidate)`` (``ScaledCosine``).

    ``kind``:
      * ``kl``: ``sentence_transformers``' ``DistillKLDivLoss``, KL divergence between the teacher's softmax over
        a list's logits and the student's (Hinton et al. 2015; used for cross- to bi-encoder distillation by
        RocketQAv2). Ignores a list's shift; matches the gaps between candidates through the softmax, so it loses
        them where one candidate dominates the list.
      * ``margin_mse``: ``sentence_transformers``' ``MarginMSELoss`` (Hofstaetter et al. 2020, "Improving
        Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation"): the mean squared error
        between the student's margins ``s_1 - s_i`` and the teacher's ``t_1 - t_i``, the list's first candidate
        against each other one (``N - 1`` margins a list; the library turns ``N`` logits into those margins).
        Ignores a list's shift, not its spread: the student regresses the teacher's logit gaps directly. The first
        candidate (by default the start encoder's nearest, ``kd_pairs.candidate_groups``) is in every margin, and
        the squared margins are larger than the KL (tens against about log N), so these batches weigh more in the
        shared optimizer.

    Args:
        scale: the student's cosine is multiplied by it.
        teacher_temperature: the teacher's logits are divided by it (for kl, >1 softens a confident teacher; for
            margin_mse it scales the target margins).
        pearson_weight: when > 0, ``ListwisePearsonLoss``: the list loss plus this weight x Pearson KD across the
            batch.
        kind: ``kl`` or ``margin_mse``.

    Raises:
        ConfigError: an unknown ``kind`` (exit 2)."""
    from sentence_transformers.sentence_transformer import losses

    if kind == "kl":
        inner = losses.DistillKLDivLoss(model, similarity_fct=ScaledCosine(scale), temperature=1.0,
                                        teacher_temperature=teacher_temperature)
    elif kind == "margin_mse":
        inner = losses.MarginMSELoss(model, similarity_fct=ScaledCosine(scale))
        if teacher_temperature != 1.0:
            inner = TeacherTemperature(inner, teacher_temperature)
    else:
        raise ConfigError(f"train.kd_list_loss {kind!r}: choose from {', '.join(KD_LIST_LOSSES)}")
    return ListwisePearsonLoss(model, inner, pearson_weight) if pearson_weight else inner


class TaskLosses:
    """Running per-task loss sums, filled by ``RecordedLoss`` and read by the progress callback."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + value
        self.counts[name] = self.counts.get(name, 0) + 1

    def pop_means(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts.get(k)}
        self.sums.clear()
        self.counts.clear()
        return out


class RecordedLoss(nn.Module):
    """Wraps a loss and records its value under a task name (for per-task training logs and curves)."""

    def __init__(self, loss: nn.Module, name: str, sink: TaskLosses) -> None:
        super().__init__()
        self.loss = loss
        self.name = name
        self.sink = sink
        self.model = getattr(loss, "model", None)

    def forward(self, sentence_features, labels):
        value = self.loss(sentence_features, labels)
        if self.training or torch.is_grad_enabled():
            self.sink.add(self.name, float(value.detach()))
        return value

    def get_config_dict(self) -> dict[str, Any]:
        inner = getattr(self.loss, "get_config_dict", None)
        return {"task": self.name, **(inner() if inner else {})}
