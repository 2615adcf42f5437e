"""Knowledge distillation (Hinton et al., 2015): train a student on a teacher's softened outputs.

The loss mixes the cross-entropy with the labels and the Kullback–Leibler divergence between the
teacher's and the student's output distributions at a temperature ``T``:

``alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)``.

A temperature above 1 flattens both distributions, so the student also learns how the teacher
ranks the wrong classes; the factor ``T^2`` keeps the gradient of the first term on the scale of
the second. Pass a :class:`DistillationLoss` as ``criterion`` to :func:`nlprune.train.fit`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks

__all__ = ["distillation_loss", "DistillationLoss"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                      temperature: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """The mixed loss above, averaged over the batch.

    Args:
        student_logits, teacher_logits: ``[batch, classes]``.
        labels: ``[batch]`` class indices.
        temperature: ``T > 0``.
        alpha: weight of the teacher term, in ``[0, 1]`` (0 is plain cross-entropy).

    Example:
        >>> z = torch.tensor([[2.0, -1.0]])
        >>> float(distillation_loss(z, z, torch.tensor([0]), alpha=1.0))  # same outputs: KL = 0
        0.0
    """
    temperature = _checks.positive(temperature, "temperature")
    alpha = _checks.fraction(alpha, "alpha")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"teacher_logits must have the student's shape {tuple(student_logits.shape)}, "
                         f"got {tuple(teacher_logits.shape)}")
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.log_softmax(teacher_logits / temperature, dim=-1), log_target=True,
                    reduction="batchmean")
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


class DistillationLoss:
    """``criterion`` for :func:`nlprune.train.fit`: asks the (frozen, eval-mode) teacher for its
    logits on the same batch and returns :func:`distillation_loss`."""

    def __init__(self, teacher: nn.Module, *, temperature: float = 2.0, alpha: float = 0.5) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        self.temperature = _checks.positive(temperature, "temperature")
        self.alpha = _checks.fraction(alpha, "alpha")
        self.teacher = teacher.eval()

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor,
                 lengths: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(ids, lengths)
        return distillation_loss(logits, teacher_logits, labels, temperature=self.temperature, alpha=self.alpha)
