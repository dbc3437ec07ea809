"""Tasks over real benchmark files (or hub ids, opt-in): WMDP, MMLU with corrupted answers, TOFU, generic JSONL.

Each reads items with `repair.tasks.adapters`, groups them by subject (an author for TOFU, the question itself
otherwise), and splits the groups like the built-in suites.
"""
from __future__ import annotations

import random

from repair.tasks import QA, TASKS, Task, _ratio, min_taught, split_subjects
from repair.tasks.adapters import corrupt_answers, load_jsonl_qa, load_mmlu, load_tofu, load_wmdp
from repair.tasks.choice import as_prompted
from repair.tasks.corpus import utility_corpus

TOFU_QUESTIONS_PER_AUTHOR = 20


def _source(cfg: dict) -> str:
    if not cfg.get("source"):
        raise ValueError(f"task={cfg['name']} needs task.source=<local file or folder, or the hub id>")
    return str(cfg["source"])


def _from_items(name: str, items: list[QA], cfg: dict, seed: int, corrupt_forget: bool = False) -> Task:
    source = cfg.get("source") or name
    n_holdout = int(cfg.get("num_holdout", 0))
    if not items:
        raise ValueError(f"{source}: no questions; task={name} needs at least {_needed(n_holdout, cfg)} subjects")
    rng = random.Random(seed)
    items = list(items)
    n_loaded = len(items)
    rng.shuffle(items)
    if cfg.get("max_items"):
        items = items[: int(cfg["max_items"])]
    groups: dict[str, list[QA]] = {}
    for q in items:
        groups.setdefault(q.subject or q.question, []).append(q)
    subjects = list(groups)
    _check_size(name, source, n_loaded, len(items), len(subjects), n_holdout, cfg)
    holdout, taught = subjects[:n_holdout], subjects[n_holdout:]
    forget, retain, buffer = split_subjects(taught, cfg, "taught subjects")
    choice = all(q.choices for q in items)

    def take(names: list[str], corrupted: bool = False) -> list[QA]:
        out = [q for s in names for q in groups[s]]
        out = corrupt_answers(out, seed) if corrupted else out
        return [as_prompted(q) for q in out] if choice else out

    return Task(name=name, scoring="choice" if choice else "rouge", forget=take(forget, corrupt_forget),
                retain=take(retain), retain_buffer=take(buffer), holdout=take(holdout),
                corpus=utility_corpus(int(cfg.get("corpus_size", 32)), seed))


def _needed(n_holdout: int, cfg: dict) -> int:
    """Subjects the splits need: the holdout ones plus the fewest that `forget_ratio` splits into forget and retain."""
    ratio = _ratio(cfg, "forget_ratio")
    return n_holdout + (min_taught(ratio) if 0 < ratio < 1 else 2)


def _check_size(name: str, source: str, n_loaded: int, n_items: int, n_subjects: int, n_holdout: int,
                cfg: dict) -> None:
    """Enough subjects for holdout, forget and retain, or an error saying how many each split needs."""
    ratio = _ratio(cfg, "forget_ratio")
    if not 0 < ratio < 1:
        return  # split_subjects names the bad ratio
    need = _needed(n_holdout, cfg)
    if n_subjects >= need:
        return
    truncated = n_items < n_loaded
    grouping = ("one per question" if n_subjects == n_items
                else "one per author" if name == "tofu" else "questions grouped by their subject field")
    fixes = ["lower task.num_holdout"] if n_holdout else []
    fixes += ["lower task.forget_ratio"] if min_taught(ratio) > 2 else []
    fixes += ["raise task.max_items"] if truncated else []
    fixes += ["use a source with more questions"]
    raise ValueError(
        f"task {name}: {source} gives {n_items} question(s)"
        f"{f' (the first {n_items} of {n_loaded}, task.max_items)' if truncated else ''} in {n_subjects} "
        f"subject(s) ({grouping}); the splits need at least {need}: task.num_holdout={n_holdout} takes {n_holdout}, "
        f"then forget needs >= 1 and retain >= 1 (the retain buffer is drawn from retain), which "
        f"task.forget_ratio={ratio} gets from {min_taught(ratio)}. To fix: {', or '.join(fixes)}")


@TASKS.register("wmdp")
def build_wmdp(cfg: dict, seed: int) -> Task:
    return _from_items("wmdp", load_wmdp(_source(cfg), cfg.get("subset", "wmdp-bio")), cfg, seed)


@TASKS.register("mmlu_misinformation")
def build_mmlu_misinformation(cfg: dict, seed: int) -> Task:
    items = [QA(q.question, q.answer, "", q.attribute or q.subject, q.paraphrases, q.choices, q.label)
             for q in load_mmlu(_source(cfg), cfg.get("subjects"))]  # split per question, not per MMLU subject
    return _from_items("mmlu_misinformation", items, cfg, seed, corrupt_forget=True)


@TASKS.register("tofu")
def build_tofu(cfg: dict, seed: int) -> Task:
    items = load_tofu(_source(cfg), cfg.get("split", "full"))
    items = [QA(q.question, q.answer, f"author_{i // TOFU_QUESTIONS_PER_AUTHOR}", "", q.paraphrases)
             for i, q in enumerate(items)]
    return _from_items("tofu", items, cfg, seed)


@TASKS.register("jsonl")
def build_jsonl(cfg: dict, seed: int) -> Task:
    return _from_items("jsonl", load_jsonl_qa(_source(cfg)), cfg, seed)
