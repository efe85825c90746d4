"""Distillation and task losses on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.models.losses import (
    PearsonCorrelationLoss,
    RecordedLoss,
    TaskLosses,
    build_kd_loss,
    pearson_loss,
    pearson_r,
)


def _unit(*angles_deg):
    a = torch.tensor(angles_deg, dtype=torch.float32) * math.pi / 180
    return torch.stack([torch.cos(a), torch.sin(a)], dim=1)


def test_pearson_loss_hand_values():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # y centred: [-1.5, .5, -.5, 1.5]; cov sum = 4; norms sqrt(5) each -> r = 0.8
    assert pearson_r(x, torch.tensor([1.0, 3.0, 2.0, 4.0])).item() == pytest.approx(0.8, abs=1e-6)
    assert pearson_loss(x, torch.tensor([1.0, 3.0, 2.0, 4.0])).item() == pytest.approx(0.2, abs=1e-6)
    assert pearson_loss(x, 2 * x + 7).item() == pytest.approx(0.0, abs=1e-6)  # perfect (affine) correlation
    assert pearson_loss(x, -x).item() == pytest.approx(2.0, abs=1e-6)  # anti-correlation
    assert pearson_loss(x, torch.tensor([1.0, -1.0, -1.0, 1.0])).item() == pytest.approx(1.0, abs=1e-6)  # r = 0


def test_pearson_loss_module_on_cosines_and_degenerate_batches():
    loss = PearsonCorrelationLoss(model=None)
    a = _unit(0, 0, 0)
    b = _unit(0, 90, 180)  # cosines 1, 0, -1
    assert loss.compute_loss_from_embeddings([a, b], torch.tensor([0.9, 0.5, 0.1])).item() == pytest.approx(0.0, abs=1e-6)
    assert loss.compute_loss_from_embeddings([a, b], torch.tensor([0.1, 0.5, 0.9])).item() == pytest.approx(2.0, abs=1e-6)
    # constant teacher scores or one pair: no signal, zero loss and finite zero gradient
    emb = _unit(10, 20, 30).requires_grad_()
    out = loss.compute_loss_from_embeddings([emb, _unit(0, 0, 0)], torch.tensor([0.5, 0.5, 0.5]))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() == 0
    with pytest.raises(ValueError):
        loss.compute_loss_from_embeddings([a, b], torch.tensor([0.1, 0.2]))


def test_pearson_gradient_raises_correlation():
    emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)).requires_grad_()
    other = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    teacher = torch.linspace(0, 1, 8)
    loss = PearsonCorrelationLoss(model=None)
    opt = torch.optim.SGD([emb], lr=0.5)
    first = None
    for _ in range(30):
        opt.zero_grad()
        value = loss.compute_loss_from_embeddings([emb, other], teacher)
        first = value.item() if first is None else first
        value.backward()
        opt.step()
    assert value.item() < first - 0.3


def test_selectable_kd_losses_hand_values():
    from sentence_transformers.sentence_transformer import losses

    a, b = _unit(0, 0, 0), _unit(0, 90, 180)  # cosines 1, 0, -1
    mse = build_kd_loss(None, "mse")
    assert isinstance(mse, losses.CosineSimilarityLoss)
    # mean((1-0)^2, (0-0)^2, (-1-0)^2) = 2/3
    assert mse.compute_loss_from_embeddings([a, b], torch.zeros(3)).item() == pytest.approx(2 / 3, abs=1e-6)
    cosent = build_kd_loss(None, "cosent")
    assert isinstance(cosent, losses.CoSENTLoss)
    # right order: log(1 + 2 e^-20 + e^-40) ~ 0; reversed: dominated by 20 * (1 - (-1)) = 40
    assert cosent.compute_loss_from_embeddings([a, b], torch.tensor([1.0, 0.5, 0.0])).item() == pytest.approx(0.0, abs=1e-6)
    assert cosent.compute_loss_from_embeddings([a, b], torch.tensor([0.0, 0.5, 1.0])).item() == pytest.approx(40.0, abs=1e-3)
    assert isinstance(build_kd_loss(None, "pearson"), PearsonCorrelationLoss)
    from keyphrase_pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError):
        build_kd_loss(None, "kl")


def test_task_losses_hand_values():
    from sentence_transformers.sentence_transformer import losses

    a, b = _unit(0, 0), _unit(0, 90)  # cosine distance 0 and 1
    contrastive = losses.ContrastiveLoss(model=None)  # 0.5 * (y d^2 + (1-y) relu(0.5 - d)^2), mean
    assert contrastive.compute_loss_from_embeddings([a, b], torch.tensor([1.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)
    assert contrastive.compute_loss_from_embeddings([a, b], torch.tensor([0.0, 1.0])).item() == pytest.approx(0.3125, abs=1e-6)
    mnrl = losses.MultipleNegativesRankingLoss(model=None)  # scale 20, in-batch negatives
    e1, e2 = _unit(0), _unit(90)
    right = mnrl.compute_loss_from_embeddings([torch.cat([e1, e2]), torch.cat([e1, e2])], None).item()
    wrong = mnrl.compute_loss_from_embeddings([torch.cat([e1, e2]), torch.cat([e2, e1])], None).item()
    assert right == pytest.approx(math.log1p(math.exp(-20)), abs=1e-6)
    assert wrong == pytest.approx(20 + math.log1p(math.exp(-20)), abs=1e-4)


def test_recorded_loss_collects_per_task_means():
    sink = TaskLosses()

    class Const(torch.nn.Module):
        def forward(self, features, labels):
            return labels.float().mean()

    rec = RecordedLoss(Const(), "kd", sink)
    rec(None, torch.tensor([1.0, 3.0]))
    rec(None, torch.tensor([3.0, 5.0]))
    assert sink.pop_means() == {"kd": pytest.approx(3.0)}
    assert sink.pop_means() == {}


def test_listwise_kd_loss_hand_values():
    """KL(teacher softmax || student softmax of 20 x cosine), averaged over the batch's lists."""
    from keyphrase_pipeline.models.losses import build_listwise_kd_loss

    class _Model:  # DistillKLDivLoss only keeps a reference
        pass

    loss = build_listwise_kd_loss(_Model(), scale=20.0, teacher_temperature=1.0)
    anchor = _unit(0)
    cands = [_unit(0), _unit(60)]                       # cosines 1 and 0.5 -> student logits 20 and 10
    teacher = torch.tensor([[2.0, 0.0]])
    ps = torch.softmax(torch.tensor([20.0, 10.0]), 0)
    pt = torch.softmax(teacher[0], 0)
    want = float((pt * (pt.log() - ps.log())).sum())
    got = loss.compute_loss_from_embeddings([anchor, *cands], teacher).item()
    assert got == pytest.approx(want, rel=1e-5)
    # the student agreeing with the teacher costs nothing; a reversed order costs more than a flat one
    same = torch.tensor([[20.0, 10.0]])
    assert loss.compute_loss_from_embeddings([anchor, *cands], same).item() == pytest.approx(0.0, abs=1e-6)
    flat = loss.compute_loss_from_embeddings([anchor, *cands], torch.tensor([[0.0, 0.0]])).item()
    rev = loss.compute_loss_from_embeddings([anchor, *cands], torch.tensor([[0.0, 10.0]])).item()
    assert rev > flat > 0
    # a softer teacher (temperature 2) halves its logits
    soft = build_listwise_kd_loss(_Model(), scale=20.0, teacher_temperature=2.0)
    assert soft.compute_loss_from_embeddings([anchor, *cands], torch.tensor([[4.0, 0.0]])).item() == pytest.approx(want, rel=1e-5)


def test_listwise_pearson_loss_adds_the_batch_correlation_term():
    """KL within lists + weight x (1 - r) over every (anchor, candidate) cosine of the batch against sigmoid(t)."""
    from keyphrase_pipeline.models.losses import ListwisePearsonLoss, build_listwise_kd_loss

    class _Model:
        pass

    anchors = _unit(0, 0)
    cands = [_unit(0, 30), _unit(60, 90)]           # cosines: list 1 (1, 0.5), list 2 (0.866, 0)
    teacher = torch.tensor([[2.0, 0.0], [1.0, -3.0]])
    kl_only = build_listwise_kd_loss(_Model(), scale=20.0)
    kl = kl_only.compute_loss_from_embeddings([anchors, *cands], teacher).item()
    both = build_listwise_kd_loss(_Model(), scale=20.0, pearson_weight=0.5)
    assert isinstance(both, ListwisePearsonLoss)
    cos = torch.tensor([1.0, 0.5, math.cos(math.pi / 6), 0.0])
    r = pearson_r(cos, torch.sigmoid(torch.tensor([2.0, 0.0, 1.0, -3.0]))).item()
    got = both.compute_loss_from_embeddings([anchors, *cands], teacher).item()
    assert got == pytest.approx(kl + 0.5 * (1 - r), rel=1e-5)
    # the Pearson term sees across lists: shifting one list's teacher logits leaves the KL alone, not the sum
    shifted = teacher + torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    assert kl_only.compute_loss_from_embeddings([anchors, *cands], shifted).item() == pytest.approx(kl, rel=1e-5)
    assert both.compute_loss_from_embeddings([anchors, *cands], shifted).item() != pytest.approx(got, rel=1e-3)
    assert both.get_config_dict()["pearson_weight"] == 0.5


def test_listwise_margin_mse_hand_values():
    """MarginMSE: mean over the list of (s_1 - s_i - (t_1 - t_i))**2 with s = 20 x cosine, t the teacher's logits."""
    from keyphrase_pipeline.models.losses import TeacherTemperature, build_listwise_kd_loss

    class _Model:  # MarginMSELoss only keeps a reference
        pass

    loss = build_listwise_kd_loss(_Model(), scale=20.0, kind="margin_mse")
    anchor = _unit(0)
    cands = [_unit(0), _unit(60), _unit(90)]           # cosines 1, 0.5, 0 -> student logits 20, 10, 0
    teacher = torch.tensor([[5.0, 1.0, 3.0]])          # teacher margins 4 and 2; the student's 10 and 20
    want = ((10.0 - 4.0) ** 2 + (20.0 - 2.0) ** 2) / 2
    assert loss.compute_loss_from_embeddings([anchor, *cands], teacher).item() == pytest.approx(want, rel=1e-5)
    # a shift of the teacher's list costs nothing, its spread does (unlike the KL's softmax, which also ignores
    # the gaps once one candidate dominates)
    same = torch.tensor([[20.0, 10.0, 0.0]])
    assert loss.compute_loss_from_embeddings([anchor, *cands], same + 7.0).item() == pytest.approx(0.0, abs=1e-6)
    assert loss.compute_loss_from_embeddings([anchor, *cands], same * 2).item() > 1.0
    # a teacher temperature of 2 halves the teacher's logits
    soft = build_listwise_kd_loss(_Model(), scale=20.0, teacher_temperature=2.0, kind="margin_mse")
    assert isinstance(soft, TeacherTemperature)
    assert soft.compute_loss_from_embeddings([anchor, *cands], teacher * 2).item() == pytest.approx(want, rel=1e-5)
    with pytest.raises(ConfigError, match="kd_list_loss"):
        build_listwise_kd_loss(_Model(), kind="margin")


def test_margin_mse_under_matryoshka_divides_the_teacher_logits_and_composes_with_pearson(tmp_path):
    """The training path: MatryoshkaLoss calls the list loss's ``forward`` once per dim on a real (tiny) encoder; the
    teacher temperature reaches that path (the margins only), and the Pearson term adds to MarginMSE as to the KL."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses as st_losses

    from keyphrase_pipeline.models.losses import build_listwise_kd_loss
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    model = SentenceTransformer(build_tiny_encoder(tmp_path / "enc"), device="cpu")
    texts = [["red phone case", "iphone 13 case"], ["phone case red", "screen protector"], ["usb cable", "charger"]]
    features = [model.tokenize(col) for col in texts]
    teacher = torch.tensor([[4.0, -2.0], [1.0, 3.0]])
    dims = [32, 16]

    def by_hand(dim, t, pearson=0.0):  # the Pearson term reads the teacher's P(relevant): the undivided logits
        with torch.no_grad():
            emb = [torch.nn.functional.normalize(model.encode(col, convert_to_tensor=True)[:, :dim], dim=-1)
                   for col in texts]
        cos = torch.stack([torch.cosine_similarity(emb[0], e, dim=-1) for e in emb[1:]], dim=1)
        s = 20.0 * cos
        out = float((((s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])) ** 2).mean())
        return out + pearson * float(pearson_loss(cos.reshape(-1), torch.sigmoid(teacher).reshape(-1)))

    model.eval()
    for temperature, pearson in ((1.0, 0.0), (2.0, 0.0), (2.0, 0.5)):
        inner = build_listwise_kd_loss(model, 20.0, temperature, pearson, kind="margin_mse")
        loss = st_losses.MatryoshkaLoss(model, inner, matryoshka_dims=dims)
        with torch.no_grad():
            got = float(loss(features, teacher))
        want = sum(by_hand(d, teacher / temperature, pearson) for d in dims)
        assert got == pytest.approx(want, rel=1e-4), (temperature, pearson)
