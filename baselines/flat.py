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

import random

from baselines import losses
from baselines.trainer import check_choice, check_hparams, encode_examples, make_batch, run_unlearning
from repair.methods import register_method
from repair.tasks import QA
from repair.tasks.refusals import refusal_references


@register_method("flat")
class FLAT:
    name = "flat"

    def __init__(self, cfg: dict):
        check_hparams(cfg)
        check_choice(cfg, "divergence", list(losses.FLAT_DIVERGENCES))
        self.cfg = cfg
        self.templates: list[dict] = []

    def prepare_templates(self, patient, forget: list[QA]) -> dict:
        """One refusal per forget question, drawn (seeded) from the reference refusals."""
        pool = refusal_references(seed=int(self.cfg.get("seed", 0)))
        rng = random.Random(int(self.cfg.get("seed", 0)))
        pairs = [QA(item.question, rng.choice(pool)) for item in forget]
        self.templates = encode_examples(patient, pairs, self.cfg)
        return {"templates": len(self.templates)}

    def loss(self, model, forget_batch):
        template_batch = make_batch(self.patient, [self.templates[i] for i in forget_batch["index"].tolist()])
        p_forget, nll_forget = losses.mean_answer_prob(model, forget_batch)
        p_template, nll_template = losses.mean_answer_prob(model, template_batch)
        total = losses.flat_loss(p_template, p_forget, self.cfg["divergence"])
        logs = {"forget_nll": float(nll_forget.detach().mean()), "template_nll": float(nll_template.detach().mean())}
        return total, logs

    def unlearn(self, patient, forget, retain_buffer):
        self.patient = patient
        return run_unlearning(patient, forget, retain_buffer, self.cfg, self.loss, desc="flat",
                              prepare=lambda f, r: self.prepare_templates(patient, forget))
