"""One training loop for every gradient-based baseline: forget/retain batching, optimiser, schedule,
gradient accumulation, a forget-loss stopping rule and a progress bar."""
from __future__ import annotations

import itertools
import logging
import random
import time
from typing import Callable

import torch

from repair.data import collate, encode
from repair.patient import Patient
from repair.progress import progress
from repair.tasks import QA

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict, dict | None], tuple[torch.Tensor, dict[str, float]]]


def check_hparams(cfg: dict) -> None:
    """Fail early, naming the bad value, instead of training with nonsense."""
    if float(cfg["lr"]) <= 0:
        raise ValueError(f"method.lr must be > 0, got {cfg['lr']}")
    for key in ("max_steps", "batch_size", "grad_accum"):
        if int(cfg.get(key, 1)) < 1:
            raise ValueError(f"method.{key} must be >= 1, got {cfg.get(key)}")
    if float(cfg.get("retain_weight", 0.0)) < 0:
        raise ValueError(f"method.retain_weight must be >= 0, got {cfg['retain_weight']}")


def select_parameters(patient: Patient, cfg: dict) -> list[torch.nn.Parameter]:
    """All transformer-block weights by default, or only `train_layers` (embeddings always stay frozen)."""
    layers = patient.layer_indices(cfg.get("train_layers", "all"), "method.train_layers")
    prefixes = tuple(patient.layer_prefix(i) for i in layers)
    return [p for n, p in patient.model.named_parameters() if n.startswith(prefixes)]


def _batches(examples: list[dict], batch_size: int, rng: random.Random):
    """Endless shuffled batches (small forget sets are revisited every epoch)."""
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [examples[i] for i in order[start:start + batch_size]]


def run_unlearning(patient: Patient, forget: list[QA], retain: list[QA], cfg: dict, loss_fn: LossFn,
                   desc: str) -> dict:
    """Optimise `loss_fn(model, forget_batch, retain_batch)` for up to `max_steps` optimiser steps."""
    check_hparams(cfg)
    if not forget:
        raise ValueError("nothing to forget: the forget set is empty")
    model, tok = patient.model, patient.tokenizer
    params = select_parameters(patient, cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    rng = random.Random(int(cfg.get("seed", 0)))
    max_length = int(cfg.get("max_length", 128))
    bs = int(cfg["batch_size"])
    forget_batches = _batches(encode(tok, forget, max_length), bs, rng)
    use_retain = bool(retain) and float(cfg.get("retain_weight", 0.0)) > 0
    retain_batches = _batches(encode(tok, retain, max_length), bs, rng) if use_retain else itertools.repeat(None)
    opt = torch.optim.AdamW(params, lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.0)))
    steps, accum = int(cfg["max_steps"]), int(cfg.get("grad_accum", 1))
    stop_nll = cfg.get("stop_forget_nll")
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    model.train()
    bar = progress(range(steps), desc=desc)
    try:
        for _ in bar:
            logs: dict[str, float] = {}
            for _ in range(accum):
                f_batch = collate(next(forget_batches), tok.pad_token_id, patient.device)
                r_raw = next(retain_batches)
                r_batch = collate(r_raw, tok.pad_token_id, patient.device) if r_raw is not None else None
                loss, logs = loss_fn(model, f_batch, r_batch)
                (loss / accum).backward()
            torch.nn.utils.clip_grad_norm_(params, float(cfg.get("max_grad_norm", 1.0)))
            opt.step()
            opt.zero_grad(set_to_none=True)
            history.append(logs)
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
            if stop_nll is not None and logs.get("forget_nll", 0.0) > float(stop_nll):
                log.info("%s: forget NLL %.2f passed the stop value %s after %d steps", desc, logs["forget_nll"],
                         stop_nll, len(history))
                break
    finally:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return {"steps": len(history), "train_seconds": time.perf_counter() - started,
            "final": history[-1] if history else {}, "trained_parameters": sum(p.numel() for p in params)}
