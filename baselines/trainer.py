"""What the training baselines add to the shared loop (`repair.training.train_steps`): their settings, forget and
retain batches, a pass before training, a forget-loss stopping rule, and the phase's time and peak memory.

A method subclasses `TrainingMethod` and supplies `forget_loss(model, forget_batch) -> (loss, logs)`; with
`retain_weight > 0` the loop adds `retain_weight` × `retain_loss(model, retain_batch)` (the retain-buffer NLL unless
the method brings its own, as RMU does). The two terms are backpropagated one after the other, so only one of their
graphs is held at a time. Batches carry `index` (the row of each example in its split) so a method can look up what
it computed once before training (`precompute`), e.g. NPO's reference log-probabilities or ASU's teacher
distributions, instead of keeping a second model in memory.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from typing import Any, ClassVar, Iterator, Literal, Sequence

import torch

from baselines.memory import PeakMemory
from repair.data import answer_nll, collate, encode
from repair.methods import MethodBase, MethodSettings, Unlearned
from repair.patient import Patient
from repair.progress import Phases
from repair.settings import require
from repair.tasks import QA
from repair.training import (Optimiser, TrainLayers, TrainModules, check_selection, freeze, lr_factor,
                             select_parameters, shuffled_batches, train_steps)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingSettings(MethodSettings):
    """Every training baseline's settings (conf/method/base/training.yaml, documented there)."""

    lr: float
    max_steps: int
    batch_size: int
    grad_accum: int
    max_length: int
    weight_decay: float
    max_grad_norm: float
    schedule: Literal["constant", "linear"]
    warmup_ratio: float
    train_layers: TrainLayers
    train_modules: TrainModules
    retain_weight: float
    stop_forget_nll: float | None
    lora_rank: int
    lora_alpha: float
    gradient_checkpointing: bool
    seed: int

    def check(self) -> None:
        require(self.lr > 0, "method.lr", self.lr, "a number > 0")
        require(self.lora_rank >= 0, "method.lora_rank", self.lora_rank, "an integer >= 0 (0: no LoRA)")
        require(self.lora_alpha > 0, "method.lora_alpha", self.lora_alpha, "a number > 0")
        for key in ("max_steps", "batch_size", "grad_accum", "max_length"):
            require(getattr(self, key) >= 1, f"method.{key}", getattr(self, key), "an integer >= 1")
        require(self.weight_decay >= 0, "method.weight_decay", self.weight_decay, "a number >= 0")
        require(self.max_grad_norm > 0, "method.max_grad_norm", self.max_grad_norm, "a number > 0")
        require(0 <= self.warmup_ratio < 1, "method.warmup_ratio", self.warmup_ratio, "a share in [0, 1)")
        require(self.retain_weight >= 0, "method.retain_weight", self.retain_weight, "a number >= 0")
        check_selection(self.train_layers, self.train_modules, "method")


def encode_examples(patient: Patient, items: Sequence[QA], max_length: int) -> list[dict]:
    """Token ids and answer-only labels of each item, plus its row `index` in `items`."""
    examples = encode(patient.tokenizer, items, max_length)
    for i, example in enumerate(examples):
        example["index"] = i
    return examples


def make_batch(patient: Patient, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
    batch = collate(examples, patient.tokenizer.pad_token_id, patient.device)
    batch["index"] = torch.tensor([e["index"] for e in examples], dtype=torch.long)
    return batch


def fixed_batches(patient: Patient, examples: Sequence[dict], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The examples in order, batched (for one pass that precomputes something per example)."""
    for start in range(0, len(examples), batch_size):
        yield make_batch(patient, examples[start:start + batch_size])


def retain_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The default retain term: mean answer NLL of the retain batch (GradDiff, NPO+RT, ASU_GD)."""
    loss = answer_nll(model, batch).mean()
    return loss, {"retain_nll": loss.item()}


class TrainingMethod(MethodBase):
    """A baseline that unlearns by gradient steps: `forget_loss`, and optionally its own `retain_loss`, a pass
    before training (`precompute`) and the layers it trains (`train_layers`)."""

    Settings: ClassVar[type] = TrainingSettings
    settings: TrainingSettings

    def forget_loss(self, model, forget_batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def retain_loss(self, model, retain_batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return retain_nll(model, retain_batch)

    def precompute(self, patient: Patient, forget: list[QA], forget_examples: list[dict],
                   retain_examples: list[dict]) -> dict[str, Any] | None:
        """Runs once, under no_grad on the untouched patient, before the first step; may return report items."""
        return None

    def train_layers(self, patient: Patient) -> TrainLayers:
        return self.settings.train_layers

    def unlearn(self, patient: Patient, forget: list[QA], retain_buffer: list[QA]) -> Unlearned:
        return Unlearned(run_unlearning(self, patient, forget, retain_buffer))


def run_unlearning(method: TrainingMethod, patient: Patient, forget: list[QA], retain: list[QA]) -> dict[str, Any]:
    """Minimise `forget_loss + retain_weight * retain_loss` for up to `max_steps` optimiser steps.

    The retain term is used when `retain_weight > 0` and a retain buffer exists. Training stops early once the
    logged `forget_nll` passes `stop_forget_nll` (when set). The report holds the per-step logs, the wall and CPU
    time and the peak memory of this phase (`memory`).
    """
    s = method.settings
    if not forget:
        raise ValueError("nothing to forget: the forget set is empty")
    model = patient.model
    params = select_parameters(patient, method.train_layers(patient), s.train_modules, "method")
    rng = random.Random(s.seed)
    warmup = int(round(s.warmup_ratio * s.max_steps))
    stop_nll = s.stop_forget_nll
    optimiser = Optimiser(s.lr, s.weight_decay, s.max_grad_norm, s.grad_accum,
                          schedule=lambda step: lr_factor(step, s.max_steps, warmup, s.schedule),
                          lr_setting="method.lr", lora_rank=s.lora_rank, lora_alpha=s.lora_alpha,
                          gradient_checkpointing=s.gradient_checkpointing)
    report: dict[str, Any] = {}
    phase = Phases()
    with PeakMemory() as memory:
        started, cpu_started = time.perf_counter(), time.process_time()
        with phase("encode"):
            forget_examples = encode_examples(patient, forget, s.max_length)
            use_retain = bool(retain) and s.retain_weight > 0
            retain_examples = encode_examples(patient, retain, s.max_length) if use_retain else []
        freeze(model)
        model.eval()
        with torch.no_grad(), phase("precompute"):  # NPO's reference log-probabilities, ASU's teacher, ...
            report |= method.precompute(patient, forget, forget_examples, retain_examples) or {}
        forget_batches = shuffled_batches(forget_examples, s.batch_size, rng)
        retain_batches = shuffled_batches(retain_examples, s.batch_size, rng) if use_retain else None

        def micro_step():
            forget_raw = next(forget_batches)
            retain_raw = next(retain_batches) if retain_batches is not None else None
            loss, logs = method.forget_loss(model, make_batch(patient, forget_raw))
            yield loss, 1.0, logs
            if retain_raw is not None:
                loss, logs = method.retain_loss(model, make_batch(patient, retain_raw))
                yield loss, s.retain_weight, logs

        def passed_stop(done: int, logs: dict[str, Any]) -> bool:
            if stop_nll is not None and logs.get("forget_nll", -math.inf) > stop_nll:
                log.info("%s: forget NLL %.2f passed the stop value %s after %d steps", method.name,
                         logs["forget_nll"], stop_nll, done)
                return True
            return False

        with phase("train"):
            history = train_steps(model, params, s.max_steps, micro_step, optimiser, method.name, passed_stop)
        train_seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    stopped = stop_nll is not None and bool(history) and history[-1].get("forget_nll", -math.inf) > stop_nll
    # CPU seconds (all threads) next to wall seconds: on a shared machine the wall clock measures the neighbours too
    return {"steps": len(history), "train_seconds": train_seconds, "train_cpu_seconds": cpu_seconds,
            "stopped_early": stopped,
            "final": history[-1] if history else {}, "history": history,
            "trained_parameters": sum(p.numel() for p in params.values()), "lora_rank": s.lora_rank, "memory": memory.report(),
            "phases": phase.seconds, **report}
