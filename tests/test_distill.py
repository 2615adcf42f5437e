"""nlprune.distill and train.fit(loss_fn=...)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from nlprune import data, train
from nlprune.distill import DistillationLoss, distillation_loss
from nlprune.models import RNNClassifier


def test_distillation_loss_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    labels = torch.tensor([0, 1, 2, 1, 0])
    t, a = 3.0, 0.25
    p_t = F.softmax(teacher / t, dim=-1)
    kl = (p_t * (p_t.log() - F.log_softmax(student / t, dim=-1))).sum(-1).mean()
    expected = a * t**2 * kl + (1 - a) * F.cross_entropy(student, labels)
    assert torch.allclose(distillation_loss(student, teacher, labels, temperature=t, alpha=a), expected)
    assert torch.allclose(distillation_loss(student, teacher, labels, alpha=0.0), F.cross_entropy(student, labels))
    assert float(distillation_loss(teacher, teacher, labels, alpha=1.0)) == pytest.approx(0.0, abs=1e-7)


def test_distillation_loss_rejects_bad_arguments():
    z = torch.zeros(2, 3)
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(z, z, labels, temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(z, z, labels, alpha=1.5)
    with pytest.raises(ValueError, match="teacher_logits"):
        distillation_loss(z, torch.zeros(2, 4), labels)
    with pytest.raises(TypeError, match="teacher"):
        DistillationLoss("model")


def small_task():
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(1, 20, (6,), generator=g).tolist(), i % 2) for i in range(64)]
    return DataLoader(items, batch_size=16, collate_fn=data.collate_padded)


def test_fit_with_a_criterion():
    """alpha=0 reproduces plain training exactly; alpha=1 pulls the student towards the teacher."""
    loader = small_task()
    torch.manual_seed(1)
    teacher = RNNClassifier(20, kind="gru", embed_dim=8, hidden=8)
    train.fit(teacher, loader, epochs=3, progress=False)
    torch.manual_seed(2)
    start = RNNClassifier(20, kind="gru", embed_dim=8, hidden=8)
    plain, zero, full = copy.deepcopy(start), copy.deepcopy(start), copy.deepcopy(start)
    train.fit(plain, loader, epochs=2, progress=False)
    train.fit(zero, loader, epochs=2, progress=False, criterion=DistillationLoss(teacher, alpha=0.0))
    for p, q in zip(plain.parameters(), zero.parameters()):
        assert torch.equal(p, q)
    train.fit(full, loader, epochs=2, progress=False, criterion=DistillationLoss(teacher, alpha=1.0))

    def gap(model):
        with torch.no_grad():
            ids, lengths, _ = next(iter(loader))
            return float((F.softmax(model(ids, lengths), -1) - F.softmax(teacher(ids, lengths), -1)).abs().mean())

    assert gap(full) < gap(plain)
