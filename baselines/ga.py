"""GA — gradient ascent on the forget set (Jang et al., 2023, "Knowledge Unlearning for Mitigating Privacy Risks in
Language Models"); with `retain_weight > 0` it is GradDiff (Liu et al., 2022; TOFU, Maini et al., 2024)."""
from __future__ import annotations

from baselines import losses
from baselines.trainer import TrainingMethod
from repair.methods import register_method


@register_method("ga", label="GA")
class GradientAscent(TrainingMethod):
    name = "ga"

    def forget_loss(self, model, forget_batch):
        """The forget term; the trainer adds `retain_weight` × retain NLL (GradDiff)."""
        ascent = losses.gradient_ascent(model, forget_batch)
        return ascent, {"forget_nll": -ascent.item()}
