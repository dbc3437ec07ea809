"""One training loop for everything that fine-tunes the patient: the implant (`repair.implant`), the training
baselines (`baselines.trainer`) and the relearning attack (`repair.attacks.relearn`).

What they share lives here, so it is done one way: which weights train (`select_parameters`: one meaning of
`train_layers` × `train_modules` everywhere), AdamW under a LambdaLR schedule, gradient accumulation and clipping, a
finite-loss check, a progress bar and per-step logs. What differs is passed in: how batches are drawn and what the
loss is (`micro_step`), and what happens after each optimiser step (`after_step`: the implant's recall check, a
baseline's stop rule, relearning's measurements), which may also stop training.
"""
from __future__ import annotations

import contextlib
import dataclasses
import random
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence, Union

import torch

from repair.architectures import PER_LAYER, is_transposed
from repair.progress import progress
from repair.settings import require

WHOLE_MODEL = "whole_model"
# `train_modules`: every weight of the `train_layers` blocks, the whole model (embeddings, norms and head too: what a
# random patient must learn), or module roles of the patient config's `modules` (e.g. [mlp, attention], [mlp_down])
TrainModules = Union[Literal["all", "whole_model"], list[str]]
TrainLayers = Union[Literal["all"], list[int]]

# one term of a micro-batch's loss: (loss, its weight, what to log)
LossTerm = tuple[torch.Tensor, float, dict[str, float]]
# the terms of one micro-batch, yielded one at a time: each is backpropagated before the next is computed, so only
# one computation graph is held at a time
MicroStep = Callable[[], Iterable[LossTerm]]
# called after each optimiser step with the number of steps done and that step's logs (which it may add to);
# True stops training
AfterStep = Callable[[int, dict[str, Any]], bool]


def check_selection(layers: Any, modules: Any, where: str) -> None:
    """For a settings `check()`: the whole model has no layer choice."""
    require(modules != WHOLE_MODEL or layers == "all", f"{where}.train_layers", layers,
            f"all (train_modules={WHOLE_MODEL} trains every parameter)")


def select_parameters(patient, layers: Any, modules: Any, where: str) -> dict[str, torch.nn.Parameter]:
    """The weights to train, by name, in `model.named_parameters()` order (gradient clipping sums their norms in this
    order): every weight of the `layers` blocks (`modules: all`), every parameter (`whole_model`), or the `modules`
    roles of the patient config at those layers. `where` names the settings' section in messages."""
    check_selection(layers, modules, where)
    named = patient.model.named_parameters()
    if modules == WHOLE_MODEL:
        return dict(named)
    indices = patient.layer_indices(layers, f"{where}.train_layers")
    if modules == "all":
        prefixes = tuple(patient.layer_prefix(i) for i in indices)
        chosen = {n: p for n, p in named if n.startswith(prefixes)}
    else:
        valid = sorted(r for r in ("layers", *PER_LAYER) if patient.modules.get(r))
        unknown = [r for r in modules if r not in valid]
        if unknown:
            raise ValueError(f"{where}.train_modules has unknown module role(s) {unknown}; valid: 'all', "
                             f"'{WHOLE_MODEL}' or a list of {valid} (the patient config's `modules`)")
        ids = {id(p) for i in indices for r in modules for m in patient.modules_at(r, i) for p in m.parameters()}
        chosen = {n: p for n, p in named if id(p) in ids}
    if not chosen:
        raise ValueError(f"{where}: train_layers={layers} / train_modules={modules} select no weights of patient "
                         f"{patient.name!r}")
    return chosen


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based): linear warmup over `warmup` steps,
    then constant or linear decay to zero at `total` (the baselines' `schedule`; relearning's is constant)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    return 1.0


def warmup_times_decay(step: int, total: int, warmup: int) -> float:
    """The implant's multiplier: a linear warmup over `warmup` steps times a linear decay to zero at `total` that
    starts at step 0 (not after the warmup, as `lr_factor`'s does). Kept as it is: the cached implants and every
    Base number were trained under it."""
    return min(1.0, (step + 1) / max(warmup, 1)) * max(0.0, (total - step) / max(total - warmup, 1))


def shuffled_batches(examples: Sequence[dict], batch_size: int, rng: random.Random) -> Iterator[list[dict]]:
    """Endless batches, reshuffled each epoch; an epoch's last batch may be smaller."""
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [examples[i] for i in order[start:start + batch_size]]


@dataclasses.dataclass
class Optimiser:
    """How the loop optimises: AdamW at `lr` × `schedule(step)`, gradients accumulated over `grad_accum`
    micro-batches and clipped to `max_grad_norm`. `lr_setting` names the learning rate's setting (for the message
    when a loss is not finite). `lora_rank` > 0 trains LoRA factors (peft, scale `lora_alpha` / rank) on every
    selected projection instead of the projection itself, and merges them in afterwards; `gradient_checkpointing`
    recomputes each block's activations in the backward pass instead of holding them."""

    lr: float
    weight_decay: float
    max_grad_norm: float
    grad_accum: int
    schedule: Callable[[int], float]
    lr_setting: str
    lora_rank: int = 0
    lora_alpha: float = 16.0
    gradient_checkpointing: bool = False


HALF = (torch.float16, torch.bfloat16)


def lora_targets(model: torch.nn.Module, params: Iterable[str]) -> list[str]:
    """The modules whose selected weight LoRA adapts: every projection (nn.Linear or transformers' Conv1D) but the
    output head, by name."""
    head = model.get_output_embeddings()
    owners = [n.rpartition(".")[0] for n in params if n.endswith(".weight")]
    return [o for o in owners if (m := model.get_submodule(o)) is not head
            and (isinstance(m, torch.nn.Linear) or is_transposed(m))]


@contextlib.contextmanager
def low_rank_adapters(model: torch.nn.Module, params: dict[str, torch.nn.Parameter], rank: int, alpha: float):
    """Yield what to optimise: LoRA factors on every selected projection weight (nn.Linear or transformers'
    Conv1D, not the output head) and the other selected parameters (biases, norms) themselves. On exit the factors
    are merged into the weights and the adapters removed: the patient is a plain model again, changed by a
    low-rank delta per projection, whatever happened inside (an error included)."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    projections = lora_targets(model, params)
    if not projections:
        raise ValueError(f"lora_rank={rank}: the selected weights hold no projection (nn.Linear) to adapt; select "
                         f"module roles such as [mlp, attention], or set lora_rank: 0")
    transposed = any(is_transposed(model.get_submodule(n)) for n in projections)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=projections,
                        fan_in_fan_out=transposed, init_lora_weights=True)
    adapted = {f"{n}.weight" for n in projections}
    rest = [p for n, p in params.items() if n not in adapted]
    inject_adapter_in_model(config, model)
    try:
        factors = [p for n, p in model.named_parameters() if ".lora_" in n]
        yield factors + rest
    finally:
        with torch.no_grad():
            for name, module in list(model.named_modules()):
                if isinstance(module, LoraLayer):
                    module.merge()
                    parent, _, child = name.rpartition(".")
                    setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())


class MasterWeights:
    """float32 copies of the half-precision (bf16, fp16) weights being trained, for the optimiser to update: an
    AdamW step of lr 5e-5 on a bf16 weight is below its rounding (8 bits of mantissa) and vanishes. Gradients are
    moved to the masters before clipping, and the weights are set from the masters after each step."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.pairs = [(p, p.detach().float().clone().requires_grad_(True)) for p in params if p.dtype in HALF]
        masters = {id(p): m for p, m in self.pairs}
        self.optimised = [masters.get(id(p), p) for p in params]

    def gradients_to_masters(self) -> None:
        for p, m in self.pairs:
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    @torch.no_grad()
    def masters_to_weights(self) -> None:
        for p, m in self.pairs:
            p.copy_(m)


def freeze(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module):
    """Eval mode for a measurement between training steps, then back to training."""
    model.eval()
    try:
        yield
    finally:
        model.train()


def train_steps(model: torch.nn.Module, params: dict[str, torch.nn.Parameter], steps: int, micro_step: MicroStep,
                optimiser: Optimiser, desc: str, after_step: AfterStep | None = None) -> list[dict[str, Any]]:
    """Up to `steps` optimiser steps on `params` (by name; the only weights that require gradients meanwhile); each
    step backpropagates `optimiser.grad_accum` micro-steps' terms, clips, steps the optimiser and the schedule.
    Returns each step's logs: `loss` (the last micro-step's weighted sum of terms), the terms' own logs and the
    step's `lr`. Half-precision weights are trained through float32 masters; with `lora_rank`, LoRA factors are
    trained and merged in at the end. The model is left in eval mode with every weight frozen and no adapter, also
    when training fails."""
    freeze(model)
    adapters = (low_rank_adapters(model, params, optimiser.lora_rank, optimiser.lora_alpha)
                if optimiser.lora_rank > 0 else contextlib.nullcontext(list(params.values())))
    checkpointing = activation_checkpointing(model) if optimiser.gradient_checkpointing else contextlib.nullcontext()
    try:
        with checkpointing, adapters as trained:
            return _train(model, trained, steps, micro_step, optimiser, desc, after_step)
    finally:
        freeze(model)


@contextlib.contextmanager
def activation_checkpointing(model: torch.nn.Module):
    """Each block's activations recomputed in the backward pass (transformers ≥ 5 names it activation checkpointing,
    earlier versions gradient checkpointing); off again on exit."""
    new = hasattr(model, "activation_checkpointing_enable")
    if new:
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        model.activation_checkpointing_disable() if new else model.gradient_checkpointing_disable()


def _train(model: torch.nn.Module, params: list[torch.nn.Parameter], steps: int, micro_step: MicroStep,
           optimiser: Optimiser, desc: str, after_step: AfterStep | None) -> list[dict[str, Any]]:
    for p in params:
        p.requires_grad_(True)
    masters = MasterWeights(params)
    opt = torch.optim.AdamW(masters.optimised, lr=optimiser.lr, weight_decay=optimiser.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, optimiser.schedule)
    accum = optimiser.grad_accum
    history: list[dict[str, Any]] = []
    model.train()
    bar = progress(total=steps, desc=desc)
    try:
        for _ in range(steps):
            for _ in range(accum):
                total, logs = 0.0, {}
                for loss, weight, term_logs in micro_step():
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {len(history)}; lower "
                                                 f"{optimiser.lr_setting} (now {optimiser.lr})")
                    (weight * loss / accum).backward()
                    total += weight * loss.item()
                    logs |= term_logs
            masters.gradients_to_masters()
            torch.nn.utils.clip_grad_norm_(masters.optimised, optimiser.max_grad_norm)
            logs = {"loss": total, **logs, "lr": sched.get_last_lr()[0]}
            opt.step()
            masters.masters_to_weights()
            sched.step()
            opt.zero_grad(set_to_none=True)
            history.append(logs)
            stop = after_step is not None and after_step(len(history), logs)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if isinstance(v, float)}, refresh=False)
            if stop:
                break
    finally:
        bar.close()
        model.eval()
        freeze(model)
    return history
