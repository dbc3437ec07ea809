"""NPO — Negative Preference Optimization (Zhang, Lin, Bai & Mei, 2024, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning", arXiv 2404.05868).

Loss: (2/β) E_forget[softplus(β (log π_θ(y|x) - log π_ref(y|x)))] (+ `retain_weight` × retain NLL: NPO+RT), with
log π the sum of the answer-token log-probabilities. The frozen reference π_ref is the patient before unlearning;
its forget log-probabilities are computed once, before the first step, and kept per example — no second model
is held in memory, so NPO costs what GA costs plus one vector.
"""
from __future__ import annotations

import dataclasses

import torch

from baselines import losses
from baselines.trainer import TrainingMethod, TrainingSettings, fixed_batches
from repair.data import answer_token_logprobs
from repair.methods import register_method
from repair.settings import require


@dataclasses.dataclass
class NPOSettings(TrainingSettings):
    beta: float

    def check(self) -> None:
        super().check()
        require(self.beta > 0, "method.beta", self.beta, "a number > 0")


@register_method("npo", label="NPO")
class NPO(TrainingMethod):
    name = "npo"
    Settings = NPOSettings
    settings: NPOSettings

    def __init__(self, settings: NPOSettings):
        super().__init__(settings)
        self.ref_logp: torch.Tensor | None = None

    def precompute(self, patient, forget, forget_examples, retain_examples) -> dict:
        """log π_ref(y|x) of every forget example, from the untouched patient."""
        ref = torch.empty(len(forget_examples))
        for batch in fixed_batches(patient, forget_examples, self.settings.batch_size):
            ref[batch["index"]] = losses.sequence_logprob(patient.model, batch).float().cpu()
        self.ref_logp = ref
        return {"reference_logp_mean": float(ref.mean())}

    def forget_loss(self, model, forget_batch):
        logprobs, rows = answer_token_logprobs(model, forget_batch)
        n = forget_batch["input_ids"].shape[0]
        logp = losses.row_sum(logprobs, rows, n)
        ref = self.ref_logp[forget_batch["index"]].to(logp.device)
        total = losses.npo_loss(logp, ref, self.settings.beta)
        logs = {"forget_nll": float(-losses.row_mean(logprobs.detach(), rows, n).mean()),
                "log_ratio": float((logp.detach() - ref).mean())}
        return total, logs
