"""ASU — Attention Smoothing Unlearning (Zare Zade, Zhou, Liu & Zhu, "Attention Smoothing Is All You Need For
Unlearning", ICLR 2026, arXiv 2603.01285).

The forget-teacher is the patient itself with the softmax temperature of self-attention raised to τ
(softmax(QKᵀ/(τ√d))) in the `smooth_layers`: flatter attention loses the precise token associations that recall a
fact while function words survive. The student (the patient, normal attention) is distilled toward it on the
forget set: minimise the per-token KL(p_teacher ‖ p_student) over the forget answers (teacher-forced), plus
`retain_weight` × retain NLL (the paper's ASU_GD). The teacher is frozen, so its answer-position distributions
are computed once before training and kept per example; no second model is held. τ in [2, 2.8] is the paper's
stable range.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Literal

import torch
import torch.nn.functional as F

from baselines import losses
from baselines.trainer import TrainingMethod, TrainingSettings, fixed_batches
from repair.methods import register_method
from repair.settings import require

log = logging.getLogger(__name__)


@contextlib.contextmanager
def attention_temperature(patient, layers: list[int], tau: float):
    """Divide the attention logits of `layers` by `tau` inside the block (the modules' `scaling` 1/√d), then
    restore it exactly."""
    modules = [patient.module("attention", i) for i in layers]
    for i, module in zip(layers, modules):
        if not isinstance(getattr(module, "scaling", None), float):
            raise TypeError(f"attention module of layer {i} ({type(module).__name__}) has no float `scaling` to "
                            f"temper; ASU needs a transformers attention that applies `self.scaling`")
    saved = [module.scaling for module in modules]
    try:
        for module, scale in zip(modules, saved):
            module.scaling = scale / tau
        yield
    finally:
        for module, scale in zip(modules, saved):
            module.scaling = scale


def _answer_targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The answer tokens, in the order `losses.answer_logits` returns their positions."""
    targets = batch["labels"][:, 1:]
    return targets[targets != -100]


@dataclasses.dataclass
class ASUSettings(TrainingSettings):
    temperature: float
    smooth_layers: Literal["all"] | list[int]

    def check(self) -> None:
        super().check()
        require(self.temperature >= 1, "method.temperature", self.temperature, "a number >= 1 (1 = no smoothing)")


@register_method("asu", label="ASU")
class AttentionSmoothing(TrainingMethod):
    name = "asu"
    Settings = ASUSettings
    settings: ASUSettings

    def __init__(self, settings: ASUSettings):
        super().__init__(settings)
        self.teacher: list[torch.Tensor] = []

    def precompute(self, patient, forget, forget_examples, retain_examples) -> dict:
        """The forget-teacher's log-distributions at every forget answer position, from the untouched patient."""
        layers = patient.layer_indices(self.settings.smooth_layers, "method.smooth_layers")
        self.teacher = [None] * len(forget_examples)
        teacher_nll = []
        with attention_temperature(patient, layers, self.settings.temperature):
            for batch in fixed_batches(patient, forget_examples, self.settings.batch_size):
                logits, rows = losses.answer_logits(patient.model, batch)
                logprobs = F.log_softmax(logits, dim=-1)
                teacher_nll.append(F.nll_loss(logprobs, _answer_targets(batch), reduction="none"))
                for row, idx in enumerate(batch["index"].tolist()):
                    self.teacher[idx] = logprobs[rows == row].clone()
        size_mb = sum(t.numel() * t.element_size() for t in self.teacher) / 2**20
        nll = float(torch.cat(teacher_nll).mean())
        log.info("asu: teacher (τ=%s) forget answer NLL %.2f; its distributions for %d forget examples take %.0f MB",
                 self.settings.temperature, nll, len(self.teacher), size_mb)
        return {"teacher_mb": round(size_mb, 1), "teacher_forget_nll": nll}

    def forget_loss(self, model, forget_batch):
        logits, rows = losses.answer_logits(model, forget_batch)
        teacher = torch.cat([self.teacher[i] for i in forget_batch["index"].tolist()]).to(logits.device)
        n = forget_batch["input_ids"].shape[0]
        total = losses.distillation_kl(logits, teacher, rows, n)
        token_nll = F.cross_entropy(logits.detach(), _answer_targets(forget_batch), reduction="none")
        logs = {"kl": total.item(), "forget_nll": float(losses.row_mean(token_nll, rows, n).mean())}
        return total, logs
