"""WGA — Weighted Gradient Ascent (Wang, Zhou, Zhou, Shin, Han & Weinberger, 2025, "Rethinking LLM Unlearning
Objectives: A Gradient Perspective and Go Beyond", ICLR 2025, arXiv 2502.19301).

Loss: mean over forget answer tokens of w_t · log p_θ(y_t | x, y_<t) with w_t = p_θ(y_t | ·)^β, detached — GA
whose per-token pull fades as a token is forgotten, so the model is not driven on into collapse.
`retain_weight > 0` adds the retain-buffer NLL. β = 1 as in the authors' setup.
"""
from __future__ import annotations

from baselines import losses
from baselines.trainer import check_hparams, check_positive, run_unlearning
from repair.data import answer_token_logprobs
from repair.methods import register_method


@register_method("wga")
class WeightedGradientAscent:
    name = "wga"

    def __init__(self, cfg: dict):
        check_hparams(cfg)
        check_positive(cfg, "beta")
        self.cfg = cfg

    def loss(self, model, forget_batch):
        logprobs, rows = answer_token_logprobs(model, forget_batch)
        total = losses.wga_loss(logprobs, float(self.cfg["beta"]))
        n = forget_batch["input_ids"].shape[0]
        logs = {"forget_nll": float(-losses.row_mean(logprobs.detach(), rows, n).mean())}
        return total, logs

    def unlearn(self, patient, forget, retain_buffer):
        return run_unlearning(patient, forget, retain_buffer, self.cfg, self.loss, desc="wga")
