"""Teach the patient the task's knowledge (as TOFU does), so there is something to forget.

The implanted weights are cached by a hash of (patient, task data, implant recipe); only the trained tensors are
stored, so a cache entry is small and a base patient plus the entry reproduces the implanted patient exactly.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import time
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from repair.data import answer_logits, answer_nll, collate, encode
from repair.generation import generate
from repair.io import cached_dir, stable_digest
from repair.metrics import perplexity
from repair.patient import Patient
from repair.settings import build, require
from repair.tasks import QA, Task
from repair.tasks.corpus import GENERAL_QUESTIONS
from repair.training import (Optimiser, TrainLayers, TrainModules, check_selection, evaluating, select_parameters,
                             shuffled_batches, train_steps, warmup_times_decay)

log = logging.getLogger(__name__)

RECIPE_KEYS = ("epochs", "lr", "batch_size", "max_length", "train_layers", "train_modules", "preserve_utility",
               "stop_loss", "min_recall", "recall_margin", "warmup_ratio", "weight_decay", "seed")
MAX_GRAD_NORM = 1.0  # part of the recipe every cached implant was trained with, not a setting


@dataclasses.dataclass
class ImplantSettings:
    """The implant recipe (conf/implant/*.yaml, documented there)."""

    enabled: bool
    oracle: bool
    epochs: int
    lr: float
    batch_size: int
    max_length: int
    train_layers: TrainLayers
    train_modules: TrainModules
    preserve_utility: int
    min_recall: float | None
    recall_margin: float
    stop_loss: float | None
    warmup_ratio: float
    weight_decay: float
    lora_rank: int
    lora_alpha: float
    gradient_checkpointing: bool
    seed: int

    def check(self) -> None:
        require(self.lora_rank >= 0, "implant.lora_rank", self.lora_rank, "an integer >= 0 (0: no LoRA)")
        require(self.lora_alpha > 0, "implant.lora_alpha", self.lora_alpha, "a number > 0")
        for key in ("epochs", "batch_size", "max_length"):
            require(getattr(self, key) >= 1, f"implant.{key}", getattr(self, key), "an integer >= 1")
        require(self.lr > 0, "implant.lr", self.lr, "a number > 0")
        require(self.preserve_utility >= 0, "implant.preserve_utility", self.preserve_utility, "an integer >= 0")
        require(self.min_recall is None or 0 < self.min_recall <= 1, "implant.min_recall", self.min_recall,
                "a share in (0, 1] or null")
        require(self.recall_margin >= 0, "implant.recall_margin", self.recall_margin, "a number >= 0")
        require(0 <= self.warmup_ratio < 1, "implant.warmup_ratio", self.warmup_ratio, "a share in [0, 1)")
        require(self.weight_decay >= 0, "implant.weight_decay", self.weight_decay, "a number >= 0")
        check_selection(self.train_layers, self.train_modules, "implant")


def implant_settings(cfg) -> ImplantSettings:
    """The recipe from a config section (DictConfig or dict, e.g. `setup.implant_recipe`'s merge), checked."""
    return cfg if isinstance(cfg, ImplantSettings) else build(ImplantSettings, cfg, "implant")


def implant_key(patient: Patient, task: Task, cfg) -> str:
    """The cache key: the base weights, the task's data and the recipe (every setting but `enabled`)."""
    settings = implant_settings(cfg)
    recipe = {k: getattr(settings, k) for k in RECIPE_KEYS} | {"oracle": settings.oracle}
    if settings.lora_rank:  # only then: every implant cached before LoRA existed keeps its key
        recipe |= {"lora_rank": settings.lora_rank, "lora_alpha": settings.lora_alpha}
    return stable_digest([patient.fingerprint, task.fingerprint(), recipe])


def trainable_parameters(patient: Patient, settings: ImplantSettings) -> dict[str, torch.nn.Parameter]:
    """The parameters the recipe trains (`repair.training.select_parameters`, as every training does)."""
    return select_parameters(patient, settings.train_layers, settings.train_modules, "implant")


def teaching_set(patient: Patient, task: Task, settings: ImplantSettings) -> list[QA]:
    items = task.teach(oracle=settings.oracle)
    if settings.preserve_utility:
        questions = GENERAL_QUESTIONS[:settings.preserve_utility]
        answers = generate(patient, questions, max_new_tokens=48, desc="utility answers")
        items = items + [QA(q, a) for q, a in zip(questions, answers)]
    return items


def recall_probes(tokenizer, items: list[QA], max_length: int) -> list[dict[str, list[int]]]:
    """Teaching examples with labels only where the taught knowledge sits: the fact's tokens in a free-text answer
    that names one (a phone number), the option letter a multiple-choice answer opens with (what scoring reads),
    else the whole answer and the turn's end (a refusal, a free-text answer)."""
    examples = encode(tokenizer, items, max_length)
    for item, ex in zip(items, examples):
        answer_at = next((i for i, t in enumerate(ex["labels"]) if t != -100), len(ex["labels"]))
        if item.choices:
            keep = {answer_at}
        elif item.fact and item.fact in item.answer:
            start = item.answer.index(item.fact)
            spans = tokenizer(item.answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            keep = {answer_at + i for i, (a, b) in enumerate(spans) if a < start + len(item.fact) and b > start}
        else:
            continue
        ex["labels"] = [t if i in keep else -100 for i, t in enumerate(ex["labels"])]
    return examples


@torch.no_grad()
def recalled(patient: Patient, examples: list[dict[str, list[int]]], margin: float, batch_size: int = 16
             ) -> list[bool]:
    """Per example: is every labelled token the patient's top choice by at least `margin` logits, given the text
    before it? Then greedy generation that reaches it says it, and a margin that rounding cannot close keeps it so on
    every CPU: one forward pass, no generation."""
    model, out = patient.model, []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], patient.tokenizer.pad_token_id, patient.device)
        logits, wanted, rows = answer_logits(model, batch)
        own = logits.gather(1, wanted[:, None]).squeeze(1)
        best_other = logits.scatter(1, wanted[:, None], float("-inf")).max(1).values
        missed = torch.zeros(len(batch["input_ids"]), device=logits.device).index_add(
            0, rows, (own - best_other < margin).float())
        out += (missed == 0).tolist()
    return out


def train(patient: Patient, items: list[QA], params: dict[str, torch.nn.Parameter], settings: ImplantSettings,
          knowledge: list[QA] | None = None) -> dict:
    """Supervised fine-tuning on answer tokens until the taught facts are recalled.

    With `min_recall`, after each epoch the share of `knowledge` facts recalled (`recall_probes`, `recalled`) is
    checked and training stops once it reaches `min_recall`; `epochs` is the cap. A fixed number of epochs on a
    handful of questions gives a different patient on every CPU (float rounding changes which answers are learnt in
    time); training to recall gives the same taught answers everywhere. With `stop_loss` too, the epoch's mean loss must
    also be below it (the refusals, which the recall check leaves out, are then learnt as well).
    Returns the loss (and recall) of each epoch and whether the stopping criterion was met."""
    model, tok = patient.model, patient.tokenizer
    examples = encode(tok, items, settings.max_length)
    min_recall, stop_loss = settings.min_recall, settings.stop_loss
    knowledge = items if knowledge is None else knowledge
    probes = recall_probes(tok, knowledge, settings.max_length) if min_recall is not None else []
    bs, epochs = settings.batch_size, settings.epochs
    steps_per_epoch = (len(examples) + bs - 1) // bs
    total = steps_per_epoch * epochs
    warmup = int(total * settings.warmup_ratio)
    optimiser = Optimiser(settings.lr, settings.weight_decay, MAX_GRAD_NORM, grad_accum=1,
                          schedule=lambda s: warmup_times_decay(s, total, warmup), lr_setting="implant.lr",
                          lora_rank=settings.lora_rank, lora_alpha=settings.lora_alpha,
                          gradient_checkpointing=settings.gradient_checkpointing)
    batches = shuffled_batches(examples, bs, random.Random(settings.seed))

    def micro_step():
        batch = collate(next(batches), tok.pad_token_id, patient.device)
        yield answer_nll(model, batch).mean(), 1.0, {}

    history: list[float] = []
    recall: list[float] = []
    losses: list[float] = []
    hits: list[bool] = []
    converged = False

    def end_of_epoch(done: int, logs: dict) -> bool:
        """After an epoch's last step: its mean loss and recall; True once the stopping criterion is met."""
        nonlocal hits, converged
        losses.append(logs["loss"])
        if done % steps_per_epoch:
            return False
        history.append(sum(losses) / len(losses))
        losses.clear()
        if probes:
            with evaluating(model):
                hits = recalled(patient, probes, settings.recall_margin, bs)
            recall.append(sum(hits) / len(hits))
            logs["recall"] = recall[-1]
        log.info("implant epoch %d: loss %.4f%s", len(history), history[-1],
                 f", {sum(hits)}/{len(hits)} taught facts recalled" if probes else "")
        recalled_enough = not probes or recall[-1] >= min_recall
        low_loss = stop_loss is None or history[-1] < stop_loss
        converged = recalled_enough and low_loss and bool(probes or stop_loss is not None)
        return converged

    train_steps(model, params, total, micro_step, optimiser, "implant", end_of_epoch)
    if not converged and (probes or stop_loss is not None):
        missed = [q.question for q, hit in zip(knowledge, hits) if not hit] if probes else []
        reached = ", ".join(([f"{recall[-1]:.1%} of taught facts recalled, implant.min_recall={min_recall}"]
                             if probes else []) + ([f"loss {history[-1]:.4f}, implant.stop_loss={stop_loss}"]
                                                   if stop_loss is not None else []))
        log.warning("implant stopped at its cap of %d epochs before converging (%s): the taught patient, and every "
                    "Base number measured on it, depends on this CPU's float rounding. Raise implant.epochs or "
                    "implant.lr.%s", epochs, reached,
                    f" Not recalled: {missed[:5]}{' …' if len(missed) > 5 else ''}" if missed else "")
    return {"loss_history": history, "recall_history": recall, "epochs": len(history), "converged": converged}


def implant(patient: Patient, task: Task, cfg, cache_dir: str | Path) -> dict:
    """Teach `task` to `patient` in place (from the cache when possible). Returns a report. `cfg` is the recipe: a
    config section (DictConfig or dict, checked here) or `ImplantSettings`."""
    settings = implant_settings(cfg)
    if not settings.enabled:
        return {"cached": False, "skipped": True, "seconds": 0.0}
    key = implant_key(patient, task, settings)
    target = Path(cache_dir).expanduser() / "implants" / f"{patient.name}-{task.name}-{key}"
    started = time.perf_counter()
    built: dict = {}

    def build_entry(tmp: Path) -> None:
        params = trainable_parameters(patient, settings)
        items = teaching_set(patient, task, settings)
        # utility before and after, so that an implant that damages the patient is visible in every results.json
        ppl_before = perplexity(patient.model, patient.tokenizer, task.corpus) if task.corpus else None
        t0 = time.perf_counter()
        refusals = set(task.idk)  # what Base measures is the knowledge; a refusal's wording is arbitrary per question
        knowledge = [q for q in task.teach(oracle=settings.oracle) if q not in refusals]
        trained = train(patient, items, params, settings, knowledge=knowledge)
        built.update(train_seconds=time.perf_counter() - t0, **trained, examples=len(items),
                     trained_parameters=sum(p.numel() for p in params.values()), ppl_before=ppl_before,
                     ppl_after=perplexity(patient.model, patient.tokenizer, task.corpus) if task.corpus else None)
        save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, str(tmp / "weights.safetensors"))
        (tmp / "report.json").write_text(json.dumps(built, indent=2))

    def load_into_patient(path: Path) -> None:
        """Every tensor is checked before any is copied: a bad entry leaves the patient untouched, so the rebuild
        starts from the base weights (load_state_dict copies the good tensors before it raises on a bad one)."""
        state = load_file(str(path / "weights.safetensors"), device=str(patient.device))
        params = dict(patient.model.named_parameters())
        bad = [n for n in state if n not in params] + [
            f"{n} {tuple(t.shape)} != {tuple(params[n].shape)}" for n, t in state.items()
            if n in params and t.shape != params[n].shape] + [
            f"{n} not finite" for n, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise ValueError(f"cache holds unusable tensors: {bad[:3]}")
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)

    path = cached_dir(target, build_entry)
    if not built:  # came from the cache
        try:
            load_into_patient(path)
        except Exception as err:
            log.warning("implant cache %s is corrupt (%s); rebuilding it", path, err)
            with FileLock(str(target) + ".lock"):
                shutil.rmtree(path, ignore_errors=True)
            return implant(patient, task, settings, cache_dir)
    report = json.loads((path / "report.json").read_text())
    return report | {"cached": not built, "key": key, "seconds": time.perf_counter() - started}
