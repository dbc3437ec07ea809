"""Tasks over real benchmark files (or hub ids, opt-in): WMDP, MMLU with corrupted answers, TOFU, generic JSONL.

Each reads items with `repair.tasks.adapters`, groups them by subject (an author for TOFU, the question itself
otherwise), and splits the groups like the built-in suites.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from repair.settings import require
from repair.tasks import QA, Task, TaskSettings, min_taught, split_subjects, suite
from repair.tasks.adapters import corrupt_answers, load_jsonl_qa, load_mmlu, load_tofu, load_wmdp
from repair.tasks.choice import as_prompted
from repair.tasks.corpus import utility_corpus

TOFU_QUESTIONS_PER_AUTHOR = 20


@dataclass
class SourcedTaskSettings(TaskSettings):
    """Settings of a task read from files (or a hub id)."""

    source: str | None  # null in the YAML: the user names the data
    max_items: int | None

    def check(self) -> None:
        super().check()
        require(bool(self.source), "task.source", self.source,
                f"a local file or folder, or the hub id (see conf/task/{self.name}.yaml)")
        require(self.max_items is None or self.max_items >= 1, "task.max_items", self.max_items,
                "an integer >= 1, or null (all)")


@dataclass
class WmdpSettings(SourcedTaskSettings):
    subset: str


@dataclass
class MmluMisinformationSettings(SourcedTaskSettings):
    subjects: list[str] | None


@dataclass
class TofuSettings(SourcedTaskSettings):
    split: str


def _from_items(name: str, items: list[QA], settings: SourcedTaskSettings, seed: int,
                corrupt_forget: bool = False) -> Task:
    source, n_holdout = settings.source, settings.num_holdout
    if not items:
        raise ValueError(f"{source}: no questions; task={name} needs at least {_needed(settings)} subjects")
    rng = random.Random(seed)
    items = list(items)
    n_loaded = len(items)
    rng.shuffle(items)
    if settings.max_items:
        items = items[:settings.max_items]
    groups: dict[str, list[QA]] = {}
    for q in items:
        groups.setdefault(q.subject or q.question, []).append(q)
    subjects = list(groups)
    _check_size(name, n_loaded, len(items), len(subjects), settings)
    holdout, taught = subjects[:n_holdout], subjects[n_holdout:]
    forget, retain, buffer = split_subjects(taught, settings, "taught subjects")
    choice = all(q.choices for q in items)

    def take(names: list[str], corrupted: bool = False) -> list[QA]:
        out = [q for s in names for q in groups[s]]
        out = corrupt_answers(out, seed) if corrupted else out
        return [as_prompted(q) for q in out] if choice else out

    return Task(name=name, scoring="choice" if choice else "rouge", forget=take(forget, corrupt_forget),
                retain=take(retain), retain_buffer=take(buffer), holdout=take(holdout),
                corpus=utility_corpus(settings.corpus_size, seed))


def _needed(settings: TaskSettings) -> int:
    """Subjects the splits need: the holdout ones plus the fewest that `forget_ratio` splits into forget and retain."""
    return settings.num_holdout + min_taught(settings.forget_ratio)


def _check_size(name: str, n_loaded: int, n_items: int, n_subjects: int, settings: SourcedTaskSettings) -> None:
    """Enough subjects for holdout, forget and retain, or an error saying how many each split needs."""
    ratio, n_holdout, need = settings.forget_ratio, settings.num_holdout, _needed(settings)
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
        f"task {name}: {settings.source} gives {n_items} question(s)"
        f"{f' (the first {n_items} of {n_loaded}, task.max_items)' if truncated else ''} in {n_subjects} "
        f"subject(s) ({grouping}); the splits need at least {need}: task.num_holdout={n_holdout} takes {n_holdout}, "
        f"then forget needs >= 1 and retain >= 1 (the retain buffer is drawn from retain), which "
        f"task.forget_ratio={ratio} gets from {min_taught(ratio)}. To fix: {', or '.join(fixes)}")


@suite("wmdp", WmdpSettings)
def build_wmdp(settings: WmdpSettings, seed: int) -> Task:
    return _from_items("wmdp", load_wmdp(settings.source, settings.subset), settings, seed)


@suite("mmlu_misinformation", MmluMisinformationSettings)
def build_mmlu_misinformation(settings: MmluMisinformationSettings, seed: int) -> Task:
    items = [QA(q.question, q.answer, "", q.attribute or q.subject, q.paraphrases, q.choices, q.label)
             for q in load_mmlu(settings.source, settings.subjects)]  # split per question, not per MMLU subject
    return _from_items("mmlu_misinformation", items, settings, seed, corrupt_forget=True)


@suite("tofu", TofuSettings)
def build_tofu(settings: TofuSettings, seed: int) -> Task:
    items = load_tofu(settings.source, settings.split)
    items = [QA(q.question, q.answer, f"author_{i // TOFU_QUESTIONS_PER_AUTHOR}", "", q.paraphrases)
             for i, q in enumerate(items)]
    return _from_items("tofu", items, settings, seed)


@suite("jsonl", SourcedTaskSettings)
def build_jsonl(settings: SourcedTaskSettings, seed: int) -> Task:
    return _from_items("jsonl", load_jsonl_qa(settings.source), settings, seed)
