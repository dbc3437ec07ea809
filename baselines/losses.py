"""Unlearning losses as plain functions of the model and a batch, importable on their own."""
from __future__ import annotations

import torch

from repair.data import answer_nll


def nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean answer-token negative log-likelihood (the retain loss of GradDiff)."""
    return answer_nll(model, batch).mean()


def gradient_ascent(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """GA: minimise the negative NLL of the forget answers, i.e. push their likelihood down."""
    return -answer_nll(model, batch).mean()
