"""Teach the patient the task's knowledge (as TOFU does), so there is something to forget.

The implanted weights are cached by a hash of (patient, task data, implant recipe); only the trained tensors are
stored, so a cache entry is small and a base patient plus the entry reproduces the implanted patient exactly.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from pathlib import Path

import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from repair.data import answer_nll, collate, encode
from repair.evaluate import generate
from repair.io import cached_dir
from repair.metrics import perplexity
from repair.patient import Patient
from repair.progress import progress
from repair.tasks import QA, Task
from repair.tasks.corpus import GENERAL_QUESTIONS

log = logging.getLogger(__name__)

RECIPE_KEYS = ("epochs", "lr", "batch_size", "max_length", "train_layers", "train_modules", "preserve_utility",
               "stop_loss", "warmup_ratio", "weight_decay", "seed")


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def implant_key(patient: Patient, task: Task, cfg: dict) -> str:
    recipe = {k: cfg.get(k) for k in RECIPE_KEYS} | {"oracle": bool(cfg.get("oracle", False))}
    blob = json.dumps([patient.fingerprint, task.fingerprint(), recipe], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trainable_parameters(patient: Patient, cfg: dict) -> dict[str, torch.nn.Parameter]:
    """The parameters the recipe trains: chosen layers × chosen sub-modules (embeddings frozen), or 'all'."""
    layers = patient.layer_indices(cfg.get("train_layers", "all"), "implant.train_layers")
    modules = cfg.get("train_modules", ["mlp", "self_attn"])
    if modules == "all":  # a random patient must learn its embeddings and norms too
        return dict(patient.model.named_parameters())
    prefixes = tuple(f"{patient.layer_prefix(i)}{m}." for i in layers for m in modules)
    chosen = {n: p for n, p in patient.model.named_parameters() if n.startswith(prefixes)}
    if not chosen:
        first = patient.layer_prefix(0)
        known = sorted({n[len(first):].split(".")[0] for n, _ in patient.model.named_parameters() if n.startswith(first)})
        raise ValueError(f"implant.train_modules {modules} match no parameters of patient {patient.name!r}; "
                         f"valid: 'all' or a list of {known}")
    return chosen


def teaching_set(patient: Patient, task: Task, cfg: dict) -> list[QA]:
    items = task.teach(oracle=bool(cfg.get("oracle", False)))
    n_general = int(cfg.get("preserve_utility", 0))
    if n_general:
        questions = GENERAL_QUESTIONS[:n_general]
        answers = generate(patient, questions, max_new_tokens=48, desc="utility answers")
        items = items + [QA(q, a) for q, a in zip(questions, answers)]
    return items


def train(patient: Patient, items: list[QA], params: dict[str, torch.nn.Parameter], cfg: dict) -> list[float]:
    """Plain supervised fine-tuning on answer tokens. Returns the mean loss of each epoch."""
    model, tok = patient.model, patient.tokenizer
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    examples = encode(tok, items, int(cfg.get("max_length", 128)))
    bs, epochs = int(cfg["batch_size"]), int(cfg["epochs"])
    steps_per_epoch = (len(examples) + bs - 1) // bs
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW(params.values(), lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.0)))
    warmup = int(total * float(cfg.get("warmup_ratio", 0.1)))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * max(0.0, (total - s) / max(total - warmup, 1)))
    rng = random.Random(int(cfg.get("seed", 0)))
    stop_loss = cfg.get("stop_loss")
    model.train()
    history: list[float] = []
    bar = progress(total=total, desc="implant")
    try:
        for _ in range(epochs):
            order = list(range(len(examples)))
            rng.shuffle(order)
            losses = []
            for start in range(0, len(order), bs):
                batch = collate([examples[i] for i in order[start:start + bs]], tok.pad_token_id, patient.device)
                loss = answer_nll(model, batch).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            history.append(sum(losses) / len(losses))
            log.info("implant epoch %d: loss %.4f", len(history), history[-1])
            if stop_loss is not None and history[-1] < float(stop_loss):
                break
    finally:
        bar.close()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return history


def implant(patient: Patient, task: Task, cfg, cache_dir: str | Path) -> dict:
    """Teach `task` to `patient` in place (from the cache when possible). Returns a report."""
    cfg = _plain(cfg)
    if not cfg.get("enabled", True):
        return {"cached": False, "skipped": True, "seconds": 0.0}
    key = implant_key(patient, task, cfg)
    target = Path(cache_dir).expanduser() / "implants" / f"{patient.name}-{task.name}-{key}"
    started = time.perf_counter()
    built: dict = {}

    def build(tmp: Path) -> None:
        params = trainable_parameters(patient, cfg)
        items = teaching_set(patient, task, cfg)
        # utility before and after, so that an implant that damages the patient is visible in every results.json
        ppl_before = perplexity(patient.model, patient.tokenizer, task.corpus) if task.corpus else None
        t0 = time.perf_counter()
        history = train(patient, items, params, cfg)
        built.update(train_seconds=time.perf_counter() - t0, loss_history=history, examples=len(items),
                     trained_parameters=sum(p.numel() for p in params.values()), ppl_before=ppl_before,
                     ppl_after=perplexity(patient.model, patient.tokenizer, task.corpus) if task.corpus else None)
        save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, str(tmp / "weights.safetensors"))
        (tmp / "report.json").write_text(json.dumps(built, indent=2))

    def load_into_patient(path: Path) -> None:
        state = load_file(str(path / "weights.safetensors"), device=str(patient.device))
        missing = set(state) - set(dict(patient.model.named_parameters()))
        if missing:
            raise ValueError(f"cache holds unknown tensors: {sorted(missing)[:3]}")
        patient.model.load_state_dict(state, strict=False)

    path = cached_dir(target, build)
    if not built:  # came from the cache
        try:
            load_into_patient(path)
        except Exception as err:
            log.warning("implant cache %s is corrupt (%s); rebuilding it", path, err)
            with FileLock(str(target) + ".lock"):
                shutil.rmtree(path, ignore_errors=True)
            return implant(patient, task, cfg, cache_dir)
    report = json.loads((path / "report.json").read_text())
    return report | {"cached": not built, "key": key, "seconds": time.perf_counter() - started}
