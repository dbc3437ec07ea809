"""RMU — Representation Misdirection for Unlearning (Li et al., 2024, "The WMDP Benchmark: Measuring and Reducing
Malicious Use With Unlearning", arXiv 2403.03218, section 5).

At the output of decoder layer ℓ (`layer`, the residual stream) the forget activations are pushed toward a fixed
random direction c·u, u ~ U[0,1)^d normalised, c = `steering_coef`; the retain activations are held at what the
frozen patient computes there: loss = MSE(h_ℓ(forget), c·u) + α · MSE(h_ℓ(retain), h_ℓ^frozen(retain)), α =
`retain_weight`. Only the configured MLP weights are trained (`train_modules: [mlp_down]` of layers ℓ-2..ℓ, as in
the paper's code). The frozen retain activations are computed once before training (no second model).
Positions: answer tokens and the token that predicts the first one (`answer_positions`), since the prompt's chat
template is shared by forget and retain questions.

The scale of c is model-specific (the paper: 6.5 for Zephyr-7B, 300 for Mixtral); here it is given relative to the
mean norm of the frozen forget activations when `steering_relative` is true, so one value carries across patients.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Literal

import torch

from baselines import losses
from baselines.trainer import TrainingMethod, TrainingSettings, fixed_batches
from repair.data import answer_token_logprobs
from repair.methods import register_method
from repair.settings import require


@contextlib.contextmanager
def capture_output(module: torch.nn.Module, store: list, detach_downstream: bool = True):
    """Record `module`'s output (the hidden states) on each forward. With `detach_downstream`, later layers see a
    detached copy: the loss only depends on this layer, so no autograd graph is built above it."""

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        store.append(hidden)
        if detach_downstream:
            return (hidden.detach(), *output[1:]) if isinstance(output, tuple) else hidden.detach()
        return None

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


@dataclasses.dataclass
class RMUSettings(TrainingSettings):
    layer: int
    steering_coef: float
    steering_relative: bool
    train_layers: Literal["all", "auto"] | list[int]  # auto: [layer-2, layer-1, layer], as in the paper

    def check(self) -> None:
        super().check()
        require(self.steering_coef > 0, "method.steering_coef", self.steering_coef, "a number > 0")


@register_method("rmu", label="RMU")
class RMU(TrainingMethod):
    name = "rmu"
    Settings = RMUSettings
    settings: RMUSettings

    def __init__(self, settings: RMUSettings):
        super().__init__(settings)
        self.layer: int | None = None  # the steered layer and its block, resolved on the patient
        self.module: torch.nn.Module | None = None
        self.control: torch.Tensor | None = None
        self.frozen_retain: list[torch.Tensor] = []

    def _hidden(self, model, batch, module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(layer-ℓ activations, answer log-probs, their rows) from one forward pass."""
        with capture_output(module, []) as store:
            logprobs, rows = answer_token_logprobs(model, batch)
        return store[-1], logprobs, rows

    def precompute(self, patient, forget, forget_examples, retain_examples) -> dict:
        """The control vector c·u and the frozen retain activations, from the untouched patient."""
        bs = self.settings.batch_size
        norms = []
        for batch in fixed_batches(patient, forget_examples, bs):
            hidden, _, _ = self._hidden(patient.model, batch, self.module)
            norms.append(hidden[losses.answer_positions(batch)].float().norm(dim=-1))
        mean_norm = float(torch.cat(norms).mean())
        coef = self.settings.steering_coef * (mean_norm if self.settings.steering_relative else 1.0)
        gen = torch.Generator().manual_seed(self.settings.seed)
        u = torch.rand(patient.model.config.hidden_size, generator=gen)
        self.control = (coef * u / u.norm()).to(patient.device)
        self.frozen_retain = [None] * len(retain_examples)
        for batch in fixed_batches(patient, retain_examples, bs):
            hidden, _, _ = self._hidden(patient.model, batch, self.module)
            lengths = batch["attention_mask"].sum(-1).tolist()
            for row, idx in enumerate(batch["index"].tolist()):  # right padding: real tokens come first
                self.frozen_retain[idx] = hidden[row, :lengths[row]].detach().clone()
        return {"forget_activation_norm": mean_norm, "control_norm": coef}

    def forget_loss(self, model, forget_batch):
        hidden, logprobs, rows = self._hidden(model, forget_batch, self.module)
        forget = losses.activation_mse(hidden, self.control, losses.answer_positions(forget_batch))
        n = forget_batch["input_ids"].shape[0]
        return forget, {"forget_mse": forget.item(),
                        "forget_nll": float(-losses.row_mean(logprobs.detach(), rows, n).mean())}

    def retain_loss(self, model, retain_batch):
        """MSE between the retain activations and the frozen patient's, at layer ℓ."""
        hidden, _, _ = self._hidden(model, retain_batch, self.module)
        target = torch.zeros_like(hidden)
        for row, idx in enumerate(retain_batch["index"].tolist()):
            frozen = self.frozen_retain[idx]
            target[row, :frozen.shape[0]] = frozen
        retain = losses.activation_mse(hidden, target, losses.answer_positions(retain_batch))
        return retain, {"retain_mse": retain.item()}

    def train_layers(self, patient):
        if self.settings.train_layers == "auto":  # the paper: the steered layer and the two below it
            return [i for i in (self.layer - 2, self.layer - 1, self.layer) if i >= 0]
        return self.settings.train_layers

    def unlearn(self, patient, forget, retain_buffer):
        self.layer = patient.layer_indices([self.settings.layer], "method.layer")[0]
        self.module = patient.module("layers", self.layer)
        return super().unlearn(patient, forget, retain_buffer)
