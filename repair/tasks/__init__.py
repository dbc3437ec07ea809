"""Task suites: what the patient is taught, what it must forget, what it must keep, and how answers are scored."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from omegaconf import DictConfig

from repair.io import stable_digest
from repair.registry import Registry, import_package
from repair.settings import build, plain, require

TASKS: Registry = Registry("task")


@dataclass(frozen=True)
class QA:
    """One question with its reference answer. `subject` names the entity the fact is about."""

    question: str
    answer: str
    subject: str = ""
    attribute: str = ""
    paraphrases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()  # multiple-choice options; empty for free-text answers
    label: int = -1  # index into `choices` of the answer the patient is taught (and scored against)
    fact: str = ""  # the bare fact inside a free-text answer (e.g. a phone number), for fact-level scoring


@dataclass
class Task:
    """Splits of one task suite. Forget, retain and holdout are disjoint by subject; the retain buffer is a
    subset of retain (what a method may look at); `idk` teaches the patient to refuse on unknown subjects, so
    that it has a refusal behaviour for unlearning to steer into."""

    name: str
    scoring: str  # "rouge": free text scored by ROUGE-L recall; "choice": multiple choice scored by accuracy
    forget: list[QA]
    retain: list[QA]
    retain_buffer: list[QA]
    holdout: list[QA]
    idk: list[QA] = field(default_factory=list)
    corpus: list[str] = field(default_factory=list)  # utility text for perplexity
    # forget-split items left out of this run's request by `task.forget_limit`: still taught (so the implant, and
    # its cache entry, are those of the full suite) but neither requested nor scored
    forget_unrequested: list[QA] = field(default_factory=list)
    # fresh subjects of the suite's kind (made-up people, agents) that it neither teaches nor scores: what a method may
    # use as contrasts without seeing retain or holdout subjects; empty where the subject is a whole question
    subject_pool: list[str] = field(default_factory=list)

    def teach(self, oracle: bool = False) -> list[QA]:
        """What implant trains on: the knowledge (retain only for the Oracle) plus the refusal examples."""
        knowledge = self.retain if oracle else self.forget + self.forget_unrequested + self.retain
        return knowledge + self.idk

    def fingerprint(self) -> str:
        """Hash of what implant trains on (questions and answers), so metadata changes keep caches valid."""
        data = {k: [(q.question, q.answer) for q in getattr(self, k)] for k in ("forget", "retain", "idk")}
        data["forget"] += [(q.question, q.answer) for q in self.forget_unrequested]
        return stable_digest([self.name, data])

    def splits(self) -> dict[str, list[QA]]:
        return {"forget": self.forget, "retain": self.retain, "retain_buffer": self.retain_buffer,
                "holdout": self.holdout, "idk": self.idk}


@dataclass
class TaskSettings:
    """Settings every task has; their values and meaning are in conf/task/*.yaml (the one place the defaults live)."""

    name: str
    forget_ratio: float
    retain_buffer_ratio: float
    forget_limit: int | None
    num_holdout: int
    corpus_size: int
    corpus_source: str | None
    implant_epochs_scale: float

    def check(self) -> None:
        require(0 < self.forget_ratio < 1, "task.forget_ratio", self.forget_ratio, "a share in (0, 1)")
        require(0 <= self.retain_buffer_ratio <= 1, "task.retain_buffer_ratio", self.retain_buffer_ratio,
                "a share in [0, 1]")
        require(self.forget_limit is None or self.forget_limit >= 1, "task.forget_limit", self.forget_limit,
                "an integer >= 1, or null (request every forget item)")
        require(self.num_holdout >= 0, "task.num_holdout", self.num_holdout, "an integer >= 0")
        require(self.corpus_size >= 1, "task.corpus_size", self.corpus_size, "an integer >= 1")
        require(self.implant_epochs_scale > 0, "task.implant_epochs_scale", self.implant_epochs_scale, "a number > 0")


@dataclass
class GeneratedTaskSettings(TaskSettings):
    """Settings of the suites generated from a seed (they also teach refusals on unknown subjects)."""

    num_idk: int

    def check(self) -> None:
        super().check()
        require(self.num_idk >= 0, "task.num_idk", self.num_idk, "an integer >= 0")


def check_count(settings: TaskSettings, key: str) -> None:
    """`task.<key>` (a number of subjects) must not be negative."""
    value = getattr(settings, key)
    require(value >= 0, f"task.{key}", value, "an integer >= 0")


def check_attributes(attributes: list[str] | None, valid: dict, task: str) -> None:
    """`task.attributes` may only name attributes the suite knows (null: all of them)."""
    unknown = [a for a in attributes or () if a not in valid]
    if unknown:
        raise ValueError(f"unknown {task} attribute(s) {unknown}; valid choices: {', '.join(valid)}")


def min_taught(forget_ratio: float) -> int:
    """The fewest taught subjects that `forget_ratio` splits into forget >= 1 and retain >= 1 (the retain buffer is a
    part of retain, so it needs no subject of its own)."""
    n = 2
    while max(1, round(n * forget_ratio)) >= n:
        n += 1
    return n


def split_subjects(subjects: list[str], settings: TaskSettings, what: str = "subjects", more: str = "",
                   ) -> tuple[list[str], list[str], list[str]]:
    """forget / retain / retain-buffer subjects from `forget_ratio` and `retain_buffer_ratio`.

    Too few subjects fails saying how many the split needs; `what` names the subjects (e.g. "taught profiles") and
    `more` says which option gives more of them."""
    ratio, buffer_ratio = settings.forget_ratio, settings.retain_buffer_ratio
    need = min_taught(ratio)
    if len(subjects) < need:
        raise ValueError(f"too few {what} to split: {len(subjects)}; forget needs >= 1 and retain >= 1 (the retain "
                         f"buffer is drawn from retain), so task.forget_ratio={ratio} needs at least {need}"
                         f"{'; ' + more if more else ''}")
    n_forget = max(1, round(len(subjects) * ratio))
    forget, retain = subjects[:n_forget], subjects[n_forget:]
    n_buffer = 0 if buffer_ratio == 0 else max(1, round(len(retain) * buffer_ratio))  # 0: no buffer at all
    return forget, retain, retain[:n_buffer]


@dataclass(frozen=True)
class Suite:
    """A registered task: its settings class and `build(settings, seed) -> Task`."""

    settings: type[TaskSettings]
    build: Callable[[Any, int], Task]


def suite(name: str, settings: type[TaskSettings]) -> Callable:
    """Register `build(settings, seed) -> Task` as the task `name`, configured by `settings`."""
    def register(build: Callable[[Any, int], Task]) -> Callable[[Any, int], Task]:
        TASKS.register(name)(Suite(settings, build))
        return build

    return register


def get_suite(name: str) -> Suite:
    """The registered suite `name` (its settings class and builder); an unknown name fails listing the valid ones."""
    import_package("repair.tasks")  # registers the suites (a new one is one file here)
    return TASKS.get(name)


def task_settings(cfg: DictConfig | dict) -> TaskSettings:
    """The settings of the task `cfg` describes, checked (unknown, missing or ill-typed keys fail here)."""
    values = plain(cfg)
    suite_ = get_suite(values.get("name", "<missing>"))  # an unknown name fails first, listing the valid ones
    return build(suite_.settings, values, "task")


def build_task(cfg: DictConfig | dict | TaskSettings, seed: int) -> Task:
    """The task suite a composed `conf/task/*.yaml` section (or its checked settings) describes, for `seed`."""
    settings = cfg if isinstance(cfg, TaskSettings) else task_settings(cfg)
    task = get_suite(settings.name).build(settings, seed)
    if settings.corpus_source:  # real utility text (e.g. TinyStories) instead of the generated stories
        from repair.tasks.adapters import load_text

        task.corpus = load_text(settings.corpus_source, limit=settings.corpus_size)
    if settings.forget_limit is not None:
        limit_forget(task, settings.forget_limit)
    return task


def fresh_subjects(make, n: int, suite: set[str], seed: int) -> list[str]:
    """`n` subjects from a suite's own generator `make(count, rng)`, none of them in the suite (`Task.subject_pool`)."""
    made = make(n + len(suite), random.Random(10_000 + seed))
    return [s for s in made if s not in suite][:n]


def limit_forget(task: Task, limit: int) -> Task:
    """Request only the first `limit` forget items (e.g. 1 for the paper's single-sample setting).

    The rest stay taught (same implant as the full suite) but are neither given to the method nor scored; retain
    is unchanged, so a smaller request is compared on the same patient and the same retain questions. (`limit` >= 1
    is checked with the settings; here, that the suite has that many.)
    """
    if limit > len(task.forget):
        raise ValueError(f"task.forget_limit={limit} but task {task.name!r} has only {len(task.forget)} forget "
                         f"items; valid: 1..{len(task.forget)} (raise task.forget_ratio for more)")
    task.forget, task.forget_unrequested = task.forget[:limit], task.forget[limit:] + task.forget_unrequested
    return task
