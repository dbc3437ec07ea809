"""FLAT — Forget data only Loss AdjustmenT (Wang, Wei, Liu, Pang, Liu, Shah, Bao, Liu & Wei, "LLM Unlearning via
Loss Adjustment with Only Forget Data", ICLR 2025, arXiv 2410.11143).

Each forget question is paired with a template answer (a refusal from `repair.tasks.refusals`, as the paper pairs
TOFU questions with "I don't know" answers). The loss maximises the variational f-divergence between the template
answers and the forget answers: minimise -g(P(template | x)) + f*(g(P(forget answer | x))), where P is the mean
token probability of an answer and (g, f*) are the divergence's activation and conjugate (`divergence`: kl, js,
pearson, tv; KL by default). No retain data and no reference model are needed; `retain_weight > 0` adds the
retain-buffer NLL anyway for comparison.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Literal

from baselines import losses
from baselines.trainer import TrainingMethod, TrainingSettings, encode_examples, make_batch
from repair.methods import register_method
from repair.tasks import QA
from repair.tasks.refusals import refusal_references


@dataclasses.dataclass
class FLATSettings(TrainingSettings):
    divergence: Literal["kl", "js", "pearson", "tv"]  # the keys of losses.FLAT_DIVERGENCES


@register_method("flat", label="FLAT")
class FLAT(TrainingMethod):
    name = "flat"
    Settings = FLATSettings
    settings: FLATSettings

    def __init__(self, settings: FLATSettings):
        super().__init__(settings)
        self.patient = None  # the patient of the request, for the template batches
        self.templates: list[dict] = []

    def precompute(self, patient, forget, forget_examples, retain_examples) -> dict:
        """One refusal per forget question, drawn (seeded) from the reference refusals."""
        self.patient = patient
        pool = refusal_references(seed=self.settings.seed)
        rng = random.Random(self.settings.seed)
        pairs = [QA(item.question, rng.choice(pool)) for item in forget]
        self.templates = encode_examples(patient, pairs, self.settings.max_length)
        return {"templates": len(self.templates)}

    def forget_loss(self, model, forget_batch):
        template_batch = make_batch(self.patient, [self.templates[i] for i in forget_batch["index"].tolist()])
        p_forget, nll_forget = losses.mean_answer_prob(model, forget_batch)
        p_template, nll_template = losses.mean_answer_prob(model, template_batch)
        total = losses.flat_loss(p_template, p_forget, self.settings.divergence)
        logs = {"forget_nll": float(nll_forget.detach().mean()), "template_nll": float(nll_template.detach().mean())}
        return total, logs
