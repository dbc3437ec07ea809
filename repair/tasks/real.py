"""Tasks over real benchmark files (or hub ids, opt-in): WMDP, MMLU with corrupted answers, TOFU, generic JSONL.

Each reads items with `repair.tasks.adapters`, groups them by subject (an author for TOFU, the question itself
otherwise), and splits the groups like the built-in suites.
"""
from __future__ import annotations

import random

from repair.tasks import QA, TASKS, Task, split_subjects
from repair.tasks.adapters import corrupt_answers, load_jsonl_qa, load_mmlu, load_tofu, load_wmdp
from repair.tasks.choice import as_prompted
from repair.tasks.corpus import utility_corpus

TOFU_QUESTIONS_PER_AUTHOR = 20


def _source(cfg: dict) -> str:
    if not cfg.get("source"):
        raise ValueError(f"task={cfg['name']} needs task.source=<local file or folder, or the hub id>")
    return str(cfg["source"])


def _from_items(name: str, items: list[QA], cfg: dict, seed: int, corrupt_forget: bool = False) -> Task:
    rng = random.Random(seed)
    items = list(items)
    rng.shuffle(items)
    if cfg.get("max_items"):
        items = items[: int(cfg["max_items"])]
    groups: dict[str, list[QA]] = {}
    for q in items:
        groups.setdefault(q.subject or q.question, []).append(q)
    subjects = list(groups)
    n_holdout = int(cfg.get("num_holdout", 0))
    holdout, taught = subjects[:n_holdout], subjects[n_holdout:]
    forget, retain, buffer = split_subjects(taught, cfg)
    choice = all(q.choices for q in items)

    def take(names: list[str], corrupted: bool = False) -> list[QA]:
        out = [q for s in names for q in groups[s]]
        out = corrupt_answers(out, seed) if corrupted else out
        return [as_prompted(q) for q in out] if choice else out

    return Task(name=name, scoring="choice" if choice else "rouge", forget=take(forget, corrupt_forget),
                retain=take(retain), retain_buffer=take(buffer), holdout=take(holdout),
                corpus=utility_corpus(int(cfg.get("corpus_size", 32)), seed))


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
