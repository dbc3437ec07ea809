"""WGA — Weighted Gradient Ascent (Wang, Zhou, Zhou, Shin, Han & Weinberger, 2025, "Rethinking LLM Unlearning
Objectives: A Gradient Perspective and Go Beyond", ICLR 2025, arXiv 2502.19301).

Loss: mean over forget answer tokens of w_t · log p_θ(y_t | x, y_<t) with w_t = p_θ(y_t | ·)^β, detached — GA
whose per-token pull fades as a token is forgotten, so the model is not driven on into collapse.
`retain_weight > 0` adds the retain-buffer NLL. β = 1 as in the authors' setup.
"""
from __future__ import annotations

import dataclasses

from baselines import losses
from baselines.trainer import TrainingMethod, TrainingSettings
from repair.data import answer_token_logprobs
from repair.methods import register_method
from repair.settings import require


@dataclasses.dataclass
class WGASettings(TrainingSettings):
    beta: float

    def check(self) -> None:
        super().check()
        require(self.beta > 0, "method.beta", self.beta, "a number > 0")


@register_method("wga", label="WGA")
class WeightedGradientAscent(TrainingMethod):
    name = "wga"
    Settings = WGASettings
    settings: WGASettings

    def forget_loss(self, model, forget_batch):
        logprobs, rows = answer_token_logprobs(model, forget_batch)
        total = losses.wga_loss(logprobs, self.settings.beta)
        n = forget_batch["input_ids"].shape[0]
        logs = {"forget_nll": float(-losses.row_mean(logprobs.detach(), rows, n).mean())}
        return total, logs
