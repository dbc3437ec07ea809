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

from repair.data import answer_logits, answer_nll, collate, encode
from repair.evaluate import generate
from repair.io import cached_dir
from repair.metrics import perplexity
from repair.patient import Patient
from repair.progress import progress
from repair.tasks import QA, Task
from repair.tasks.corpus import GENERAL_QUESTIONS

log = logging.getLogger(__name__)

RECIPE_KEYS = ("epochs", "lr", "batch_size", "max_length", "train_layers", "train_modules", "preserve_utility",
               "stop_loss", "min_recall", "recall_margin", "warmup_ratio", "weight_decay", "seed")


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


def train(patient: Patient, items: list[QA], params: dict[str, torch.nn.Parameter], cfg: dict,
          knowledge: list[QA] | None = None) -> dict:
    """Supervised fine-tuning on answer tokens until the taught facts are recalled.

    With `min_recall`, after each epoch the share of `knowledge` facts recalled (`recall_probes`, `recalled`) is
    checked and training stops once it reaches `min_recall`; `epochs` is the cap. A fixed number of epochs on a
    handful of questions gives a different patient on every CPU (float rounding changes which answers are learnt in
    time); training to recall gives the same taught answers everywhere. With `stop_loss` too, the epoch's mean loss must
    also be below it (the refusals, which the recall check leaves out, are then learnt as well).
    Returns the loss (and recall) of each epoch and whether the stopping criterion was met."""
    model, tok = patient.model, patient.tokenizer
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    max_length = int(cfg.get("max_length", 128))
    examples = encode(tok, items, max_length)
    min_recall, margin = cfg.get("min_recall"), float(cfg.get("recall_margin", 1.0))
    knowledge = items if knowledge is None else knowledge
    probes = recall_probes(tok, knowledge, max_length) if min_recall is not None else []
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
    recall: list[float] = []
    converged = False
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
            if probes:
                model.eval()
                hits = recalled(patient, probes, margin, bs)
                model.train()
                recall.append(sum(hits) / len(hits))
                bar.set_postfix(loss=f"{history[-1]:.3f}", recall=f"{recall[-1]:.3f}", refresh=False)
            log.info("implant epoch %d: loss %.4f%s", len(history), history[-1],
                     f", {sum(hits)}/{len(hits)} taught facts recalled" if probes else "")
            recalled_enough = not probes or recall[-1] >= float(min_recall)
            low_loss = stop_loss is None or history[-1] < float(stop_loss)
            if recalled_enough and low_loss and (probes or stop_loss is not None):
                converged = True
                break
    finally:
        bar.close()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
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
        refusals = set(task.idk)  # what Base measures is the knowledge; a refusal's wording is arbitrary per question
        knowledge = [q for q in task.teach(oracle=bool(cfg.get("oracle", False))) if q not in refusals]
        trained = train(patient, items, params, cfg, knowledge=knowledge)
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
