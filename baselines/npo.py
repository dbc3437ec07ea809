"""NPO — Negative Preference Optimization (Zhang, Lin, Bai & Mei, 2024, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning", arXiv 2404.05868).

Loss: (2/β) E_forget[softplus(β (log π_θ(y|x) - log π_ref(y|x)))] (+ `retain_weight` × retain NLL: NPO+RT), with
log π the sum of the answer-token log-probabilities. The frozen reference π_ref is the patient before unlearning;
its forget log-probabilities are computed once, before the first step, and kept per example — no second model
is held in memory, so NPO costs what GA costs plus one vector.
"""
from __future__ import annotations

import torch

from baselines import losses
from baselines.trainer import check_hparams, check_positive, fixed_batches, run_unlearning
from repair.data import answer_token_logprobs
from repair.methods import register_method


@register_method("npo")
class NPO:
    name = "npo"

    def __init__(self, cfg: dict):
        check_hparams(cfg)
        check_positive(cfg, "beta")
        self.cfg = cfg
        self.ref_logp: torch.Tensor | None = None

    def prepare_reference(self, patient, forget_examples: list[dict], _retain_examples: list[dict]) -> dict:
        """log π_ref(y|x) of every forget example, from the untouched patient."""
        ref = torch.empty(len(forget_examples))
        for batch in fixed_batches(patient, forget_examples, int(self.cfg["batch_size"])):
            ref[batch["index"]] = losses.sequence_logprob(patient.model, batch).float().cpu()
        self.ref_logp = ref
        return {"reference_logp_mean": float(ref.mean())}

    def loss(self, model, forget_batch):
        logprobs, rows = answer_token_logprobs(model, forget_batch)
        n = forget_batch["input_ids"].shape[0]
        logp = losses.row_sum(logprobs, rows, n)
        ref = self.ref_logp[forget_batch["index"]].to(logp.device)
        total = losses.npo_loss(logp, ref, float(self.cfg["beta"]))
        logs = {"forget_nll": float(-losses.row_mean(logprobs.detach(), rows, n).mean()),
                "log_ratio": float((logp.detach() - ref).mean())}
        return total, logs

    def unlearn(self, patient, forget, retain_buffer):
        return run_unlearning(patient, forget, retain_buffer, self.cfg, self.loss, desc="npo",
                              prepare=lambda f, r: self.prepare_reference(patient, f, r))
