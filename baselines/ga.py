"""GA — gradient ascent on the forget set (Jang et al., 2023, "Knowledge Unlearning for Mitigating Privacy Risks in
Language Models"); with `retain_weight > 0` it is GradDiff (Liu et al., 2022; TOFU, Maini et al., 2024)."""
from __future__ import annotations

from baselines import losses
from baselines.trainer import check_hparams, run_unlearning
from repair.methods import register_method


@register_method("ga")
class GradientAscent:
    name = "ga"

    def __init__(self, cfg: dict):
        check_hparams(cfg)  # fail at construction, before the patient is loaded
        self.cfg = cfg

    def loss(self, model, forget_batch):
        """The forget term; the trainer adds `retain_weight` × retain NLL (GradDiff)."""
        ascent = losses.gradient_ascent(model, forget_batch)
        return ascent, {"forget_nll": -ascent.item()}

    def unlearn(self, patient, forget, retain_buffer):
        return run_unlearning(patient, forget, retain_buffer, self.cfg, self.loss, desc="ga")
