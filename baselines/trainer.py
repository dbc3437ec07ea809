"""One training loop for every gradient-based baseline: forget/retain batching, optimiser, schedule,
gradient accumulation, a forget-loss stopping rule, a progress bar and the phase's peak memory.

A method supplies `forget_loss(model, forget_batch) -> (loss, logs)`; with `retain_weight > 0` the trainer adds
`retain_weight` × `retain_loss(model, retain_batch)` (the retain-buffer NLL unless the method brings its own, as
RMU does). The two terms are backpropagated one after the other, so only one of their graphs is held at a time.
Batches carry `index` (the row of each example in its split) so a method can look up what it computed once before
training (`prepare`), e.g. NPO's reference log-probabilities or ASU's teacher distributions, instead of keeping a
second model in memory.
"""
from __future__ import annotations

import itertools
import logging
import math
import random
import time
from typing import Any, Callable, Iterator, Sequence

import torch

from baselines.memory import PeakMemory
from repair.data import answer_nll, collate, encode
from repair.patient import Patient
from repair.progress import progress
from repair.tasks import QA

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]
# called once before training, under no_grad, with the encoded forget and retain examples; may return report items
PrepareFn = Callable[[list[dict], list[dict]], dict[str, Any] | None]
SCHEDULES = ("constant", "linear")


def check_hparams(cfg: dict) -> None:
    """Fail early, naming the bad value, instead of training with nonsense."""
    if not float(cfg["lr"]) > 0:
        raise ValueError(f"method.lr must be > 0, got {cfg['lr']}")
    for key in ("max_steps", "batch_size", "grad_accum"):
        if int(cfg.get(key, 1)) < 1:
            raise ValueError(f"method.{key} must be >= 1, got {cfg.get(key)}")
    if float(cfg.get("retain_weight", 0.0)) < 0:
        raise ValueError(f"method.retain_weight must be >= 0, got {cfg['retain_weight']}")
    schedule = cfg.get("schedule", "constant")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown method.schedule {schedule!r}; valid choices: {', '.join(SCHEDULES)}")
    if not 0 <= float(cfg.get("warmup_ratio", 0.0)) < 1:
        raise ValueError(f"method.warmup_ratio must be in [0, 1), got {cfg.get('warmup_ratio')}")


def check_positive(cfg: dict, *keys: str) -> None:
    for key in keys:
        if not float(cfg[key]) > 0:
            raise ValueError(f"method.{key} must be > 0, got {cfg[key]}")


def check_choice(cfg: dict, key: str, valid: Sequence[str]) -> None:
    if cfg[key] not in valid:
        raise ValueError(f"unknown method.{key} {cfg[key]!r}; valid choices: {', '.join(valid)}")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based): linear warmup over `warmup` steps,
    then constant or linear decay to zero at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    return 1.0


def select_parameters(patient: Patient, cfg: dict) -> list[torch.nn.Parameter]:
    """The weights a method trains: every weight of the `train_layers` blocks (all by default), or only the
    `train_modules` roles of the patient config (e.g. `[mlp_down]`). Embeddings always stay frozen."""
    layers = patient.layer_indices(cfg.get("train_layers", "all"), "method.train_layers")
    modules = cfg.get("train_modules", "all")
    if modules in ("all", None):
        prefixes = tuple(patient.layer_prefix(i) for i in layers)
        return [p for n, p in patient.model.named_parameters() if n.startswith(prefixes)]
    roles = [modules] if isinstance(modules, str) else list(modules)
    valid = sorted(r for r, path in patient.modules.items() if "{}" in path)
    unknown = [r for r in roles if r not in valid]
    if unknown:
        raise ValueError(f"method.train_modules has unknown module role(s) {unknown}; valid: 'all' or {valid} "
                         f"(the patient config's `modules`)")
    params = {id(p): p for i in layers for r in roles for p in patient.module(r, i).parameters()}
    return list(params.values())


def encode_examples(patient: Patient, items: Sequence[QA], cfg: dict) -> list[dict]:
    """Token ids and answer-only labels of each item, plus its row `index` in `items`."""
    examples = encode(patient.tokenizer, items, int(cfg.get("max_length", 128)))
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


def _shuffled(examples: list[dict], batch_size: int, rng: random.Random) -> Iterator[list[dict]]:
    """Endless shuffled batches (small forget sets are revisited every epoch)."""
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [examples[i] for i in order[start:start + batch_size]]


def retain_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The default retain term: mean answer NLL of the retain batch (GradDiff, NPO+RT, ASU_GD)."""
    loss = answer_nll(model, batch).mean()
    return loss, {"retain_nll": loss.item()}


def run_unlearning(patient: Patient, forget: list[QA], retain: list[QA], cfg: dict, forget_loss: LossFn, desc: str,
                   prepare: PrepareFn | None = None, retain_loss: LossFn = retain_nll) -> dict[str, Any]:
    """Minimise `forget_loss + retain_weight * retain_loss` for up to `max_steps` optimiser steps.

    The retain term is used when `retain_weight > 0` and a retain buffer exists. Training stops early once the
    logged `forget_nll` passes `stop_forget_nll` (when set). The report holds the per-step logs, the wall and CPU
    time and the peak memory of this phase (`memory`).
    """
    check_hparams(cfg)
    if not forget:
        raise ValueError("nothing to forget: the forget set is empty")
    model = patient.model
    params = select_parameters(patient, cfg)
    if not params:
        raise ValueError(f"method {desc}: train_layers={cfg.get('train_layers')} / train_modules="
                         f"{cfg.get('train_modules')} select no weights")
    rng = random.Random(int(cfg.get("seed", 0)))
    bs = int(cfg["batch_size"])
    steps, accum = int(cfg["max_steps"]), int(cfg.get("grad_accum", 1))
    schedule = cfg.get("schedule", "constant")
    warmup = int(round(float(cfg.get("warmup_ratio", 0.0)) * steps))
    stop_nll = cfg.get("stop_forget_nll")
    weight = float(cfg.get("retain_weight", 0.0))
    history: list[dict[str, float]] = []
    report: dict[str, Any] = {}
    with PeakMemory() as memory:
        started, cpu_started = time.perf_counter(), time.process_time()
        forget_examples = encode_examples(patient, forget, cfg)
        use_retain = bool(retain) and weight > 0
        retain_examples = encode_examples(patient, retain, cfg) if use_retain else []
        for p in model.parameters():
            p.requires_grad_(False)
        if prepare is not None:
            model.eval()
            with torch.no_grad():
                report |= prepare(forget_examples, retain_examples) or {}
        for p in params:
            p.requires_grad_(True)
        forget_batches = _shuffled(forget_examples, bs, rng)
        retain_batches = _shuffled(retain_examples, bs, rng) if use_retain else itertools.repeat(None)
        opt = torch.optim.AdamW(params, lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.0)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup, schedule))
        model.train()
        bar = progress(range(steps), desc=desc)
        try:
            for _ in bar:
                for _ in range(accum):
                    terms = [(forget_loss, next(forget_batches), 1.0)]
                    r_raw = next(retain_batches)
                    if r_raw is not None:
                        terms.append((retain_loss, r_raw, weight))
                    total, logs = 0.0, {}
                    for loss_fn, raw, scale in terms:  # one backward per term: one graph held at a time
                        loss, term_logs = loss_fn(model, make_batch(patient, raw))
                        if not torch.isfinite(loss):
                            raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {len(history)}; "
                                                     f"lower method.lr (now {cfg['lr']})")
                        (scale * loss / accum).backward()
                        total += scale * loss.item()
                        logs |= term_logs
                torch.nn.utils.clip_grad_norm_(params, float(cfg.get("max_grad_norm", 1.0)))
                logs = {"loss": total, **logs, "lr": sched.get_last_lr()[0]}
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                history.append(logs)
                bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()}, refresh=False)
                if stop_nll is not None and logs.get("forget_nll", -math.inf) > float(stop_nll):
                    log.info("%s: forget NLL %.2f passed the stop value %s after %d steps", desc, logs["forget_nll"],
                             stop_nll, len(history))
                    break
        finally:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
        train_seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    stopped = stop_nll is not None and bool(history) and history[-1].get("forget_nll", -math.inf) > float(stop_nll)
    # CPU seconds (all threads) next to wall seconds: on a shared machine the wall clock measures the neighbours too
    return {"steps": len(history), "train_seconds": train_seconds, "train_cpu_seconds": cpu_seconds,
            "stopped_early": stopped,
            "final": history[-1] if history else {}, "history": history,
            "trained_parameters": sum(p.numel() for p in params), "memory": memory.report(), **report}
