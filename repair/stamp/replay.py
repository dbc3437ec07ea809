"""Replaying the layers below the first edited one: a calibration pass over the same prompts runs only the edited
layers and those above them."""
from __future__ import annotations

import contextlib

import torch

from repair.patient import Patient


class LowerLayers:
    """What the layers below the first edited one output on a set of prompts, per batch of `last_logits`. The
    calibration edits only layers from `first` up, so the layers below compute the same on every pass: replaying
    their output runs only the edited layers (16 of the default patient's 30), with the same logits bit for bit."""

    def __init__(self, first: int, container: torch.nn.ModuleList):
        self.first, self.container, self.outputs = first, container, []

    @classmethod
    def of(cls, patient: Patient, first: int) -> "LowerLayers | None":
        """None where there is nothing to replay (the first layer is edited) or the `layers` module template does
        not name a ModuleList entry (`....{}`): passes then run whole."""
        template = patient.modules["layers"]
        if first <= 0 or not template.endswith(".{}"):
            return None
        container = patient.model.get_submodule(template[:-3])
        return cls(first, container) if isinstance(container, torch.nn.ModuleList) else None

    @staticmethod
    @contextlib.contextmanager
    def around(keep: "LowerLayers | None", replay: "LowerLayers | None"):
        """A pass that records the lower layers' output (`keep`) or replays it (`replay`); either may be None."""
        with (keep.kept() if keep else contextlib.nullcontext()), \
                (replay.replayed() if replay else contextlib.nullcontext()):
            yield

    @contextlib.contextmanager
    def kept(self):
        self.outputs.clear()
        hook = self.container[self.first - 1].register_forward_hook(
            lambda module, inputs, output: self.outputs.append(output.detach()))
        try:
            yield
        finally:
            hook.remove()

    @contextlib.contextmanager
    def replayed(self):
        originals = [self.container[i] for i in range(self.first)]
        state = {"batch": -1}
        for i in range(self.first):
            self.container[i] = _Replay(self.outputs, state, advance=i == 0)
        try:
            yield
        finally:
            for i, module in enumerate(originals):
                self.container[i] = module


class _Replay(torch.nn.Module):
    """A layer below the edited ones: returns the kept output of the last such layer for the current batch (the
    first one advances the batch)."""

    def __init__(self, outputs: list[torch.Tensor], state: dict, advance: bool):
        super().__init__()
        self.outputs, self.state, self.advance = outputs, state, advance

    def forward(self, hidden_states, *args, **kwargs):
        if self.advance:
            self.state["batch"] += 1
        return self.outputs[self.state["batch"]]
