"""Unlearning losses as plain functions, importable on their own.

Batches are `repair.data.collate` batches (labels are -100 outside the answer). Functions of `(model, batch)` run
the model; the others take tensors, so they can be tested and reused without a model.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from repair.data import answer_nll, answer_token_logprobs


def row_sum(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of per-token `values` for each of the `n` rows they belong to."""
    return torch.zeros(n, device=values.device, dtype=values.dtype).index_add(0, rows, values)


def row_mean(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    counts = row_sum(torch.ones_like(values), rows, n)
    return row_sum(values, rows, n) / counts.clamp(min=1)


def nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean answer-token negative log-likelihood (the retain loss of GradDiff)."""
    return answer_nll(model, batch).mean()


def gradient_ascent(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """GA: minimise the negative NLL of the forget answers, i.e. push their likelihood down."""
    return -answer_nll(model, batch).mean()


# --- NPO ---------------------------------------------------------------------------------------------------------

def sequence_logprob(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log π(y|x): the sum of each row's answer-token log-probabilities, shape (batch,)."""
    logprobs, rows = answer_token_logprobs(model, batch)
    return row_sum(logprobs, rows, batch["input_ids"].shape[0])


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al., 2024, arXiv 2404.05868): -(2/β) log σ(-β log(π/π_ref)), i.e.
    (2/β) softplus(β (log π - log π_ref)).

    Equals (2/β) log 2 where π = π_ref; as β → 0 it becomes GA's log π (up to a constant), but its gradient is
    weighted by σ(β log(π/π_ref)), which vanishes once the answer is unlikely — the slower, bounded collapse.
    """
    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp)).mean()


# --- WGA ---------------------------------------------------------------------------------------------------------

def wga_loss(token_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """WGA (Wang et al., ICLR 2025, arXiv 2502.19301): gradient ascent with each answer token weighted by its own
    (detached) probability raised to β: minimise mean_t p_t^β · log p_t. Tokens already forgotten (p_t → 0) stop
    pulling the model."""
    weights = token_logprobs.detach().exp() ** beta
    return (weights * token_logprobs).mean()


# --- FLAT --------------------------------------------------------------------------------------------------------

# f-divergence variational pieces (Nowozin et al., 2016, Table 2), as FLAT uses them (its Table 2):
# g = the optimal variational function's output activation, f* = the convex conjugate of the generator f.
FLAT_DIVERGENCES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "kl": (lambda v: v, lambda t: torch.exp(t - 1.0)),
    "js": (lambda v: math.log(2.0) - F.softplus(-v), lambda t: -torch.log(2.0 - torch.exp(t))),
    "pearson": (lambda v: v, lambda t: t * t / 4.0 + t),
    "tv": (lambda v: 0.5 * torch.tanh(v), lambda t: t),
}


def mean_answer_prob(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean answer-token probability of each row, mean answer NLL of each row)."""
    logprobs, rows = answer_token_logprobs(model, batch)
    n = batch["input_ids"].shape[0]
    return row_mean(logprobs.exp(), rows, n), -row_mean(logprobs, rows, n)


def flat_loss(p_template: torch.Tensor, p_forget: torch.Tensor, divergence: str = "kl") -> torch.Tensor:
    """FLAT (Wang et al., ICLR 2025, arXiv 2410.11143): minimise -g(P(template answer)) + f*(g(P(forget answer))),
    which maximises the variational f-divergence between the template (refusal) answers and the forget answers. P
    is the mean token probability of an answer, so each term is bounded, unlike GA's log-likelihood."""
    if divergence not in FLAT_DIVERGENCES:
        raise ValueError(f"unknown FLAT divergence {divergence!r}; valid choices: {', '.join(FLAT_DIVERGENCES)}")
    g, f_star = FLAT_DIVERGENCES[divergence]
    return (-g(p_template) + f_star(g(p_forget))).mean()


# --- ASU ---------------------------------------------------------------------------------------------------------

def answer_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Full next-token logits at the positions that predict answer tokens, (num_answer_tokens, vocab), plus the
    row of each; the vocabulary projection runs only at those positions."""
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    keep = batch["labels"][:, 1:] != -100
    rows = torch.nonzero(keep, as_tuple=True)[0]
    return model.get_output_embeddings()(hidden[:, :-1][keep]).float(), rows


def distillation_kl(student_logits: torch.Tensor, teacher_logprobs: torch.Tensor, rows: torch.Tensor,
                    n: int) -> torch.Tensor:
    """ASU's objective (Zare Zade et al., ICLR 2026, arXiv 2603.01285): mean over examples of the per-token average
    KL(p_teacher ‖ p_student) at the answer positions."""
    student = F.log_softmax(student_logits, dim=-1)
    kl = (teacher_logprobs.exp() * (teacher_logprobs - student)).sum(-1)
    return row_mean(kl, rows, n).mean()


# --- RMU ---------------------------------------------------------------------------------------------------------

def answer_positions(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(batch, seq) mask of the positions that are answer tokens or predict one (the last prompt token included):
    where RMU steers and holds activations."""
    labels = batch["labels"] != -100
    predicts = torch.zeros_like(labels)
    predicts[:, :-1] = labels[:, 1:]
    return labels | predicts


def activation_mse(activations: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's distance (Li et al., 2024, arXiv 2403.03218): squared error averaged over the hidden dimension and the
    masked tokens of each row, then over rows. `target` broadcasts against `activations` (batch, seq, hidden)."""
    per_token = (activations.float() - target.float()).pow(2).mean(-1)
    mask = mask.to(per_token.dtype)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
