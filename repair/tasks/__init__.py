"""Task suites: what the patient is taught, what it must forget, what it must keep, and how answers are scored."""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from repair.registry import Registry

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
        return hashlib.sha256(json.dumps([self.name, data], sort_keys=True).encode()).hexdigest()[:16]

    def splits(self) -> dict[str, list[QA]]:
        return {"forget": self.forget, "retain": self.retain, "retain_buffer": self.retain_buffer,
                "holdout": self.holdout, "idk": self.idk}


def chosen_attributes(cfg: dict, valid: dict, task: str) -> list[str]:
    """`task.attributes` from config (default: all), failing on a name the suite does not know."""
    attributes = list(cfg.get("attributes") or valid)
    unknown = [a for a in attributes if a not in valid]
    if unknown:
        raise ValueError(f"unknown {task} attribute(s) {unknown}; valid choices: {', '.join(valid)}")
    return attributes


def check_int(cfg: dict, key: str, minimum: int, nullable: bool = False) -> None:
    """`task.<key>`, when set, must be an integer >= `minimum` (or null where `nullable`)."""
    if key not in cfg or (nullable and cfg[key] is None):
        return
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"task.{key} must be an integer >= {minimum}{' or null' if nullable else ''}, got {value!r}")


def _ratio(cfg: dict, key: str, default: float | None = None) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"task.{key} must be a number, got {value!r}")
    return float(value)


# task options that are counts: the smallest valid value, and whether null is allowed (null: no limit)
COUNTS = {"num_profiles": (0, False), "num_agents": (0, False), "num_facts": (0, False), "num_holdout": (0, False),
          "num_idk": (0, False), "corpus_size": (1, False), "max_items": (1, True)}


def min_taught(forget_ratio: float) -> int:
    """The fewest taught subjects that `forget_ratio` splits into forget >= 1 and retain >= 1 (the retain buffer is a
    part of retain, so it needs no subject of its own)."""
    n = 2
    while max(1, round(n * forget_ratio)) >= n:
        n += 1
    return n


def split_subjects(subjects: list[str], cfg: dict, what: str = "subjects", more: str = "",
                   ) -> tuple[list[str], list[str], list[str]]:
    """forget / retain / retain-buffer subjects from `forget_ratio` and `retain_buffer_ratio`.

    Too few subjects fails saying how many the split needs; `what` names the subjects (e.g. "taught profiles") and
    `more` says which option gives more of them."""
    ratio = _ratio(cfg, "forget_ratio")
    if not 0 < ratio < 1:
        raise ValueError(f"task.forget_ratio must be in (0, 1), got {ratio}")
    buffer_ratio = _ratio(cfg, "retain_buffer_ratio", 0.1)
    if not 0 <= buffer_ratio <= 1:
        raise ValueError(f"task.retain_buffer_ratio must be in [0, 1], got {buffer_ratio}")
    need = min_taught(ratio)
    if len(subjects) < need:
        raise ValueError(f"too few {what} to split: {len(subjects)}; forget needs >= 1 and retain >= 1 (the retain "
                         f"buffer is drawn from retain), so task.forget_ratio={ratio} needs at least {need}"
                         f"{'; ' + more if more else ''}")
    n_forget = max(1, round(len(subjects) * ratio))
    forget, retain = subjects[:n_forget], subjects[n_forget:]
    n_buffer = 0 if buffer_ratio == 0 else max(1, round(len(retain) * buffer_ratio))  # 0: no buffer at all
    return forget, retain, retain[:n_buffer]


def build_task(cfg: DictConfig | dict, seed: int) -> Task:
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    from repair.tasks import harmful, misinformation, pii, real  # noqa: F401  (registers the suites)

    builder = TASKS.get(cfg.get("name", "<missing>"))  # an unknown name fails first, listing the valid ones
    for key, (minimum, nullable) in COUNTS.items():
        check_int(cfg, key, minimum, nullable)
    task = builder(cfg, seed)
    if cfg.get("corpus_source"):  # real utility text (e.g. TinyStories) instead of the generated stories
        from repair.tasks.adapters import load_text

        task.corpus = load_text(str(cfg["corpus_source"]), limit=int(cfg.get("corpus_size", 32)))
    if cfg.get("forget_limit") is not None:
        limit_forget(task, cfg["forget_limit"])
    return task


def fresh_subjects(make, n: int, suite: set[str], seed: int) -> list[str]:
    """`n` subjects from a suite's own generator `make(count, rng)`, none of them in the suite (`Task.subject_pool`)."""
    made = make(n + len(suite), random.Random(10_000 + seed))
    return [s for s in made if s not in suite][:n]


def limit_forget(task: Task, limit) -> Task:
    """Request only the first `limit` forget items (e.g. 1 for the paper's single-sample setting).

    The rest stay taught (same implant as the full suite) but are neither given to the method nor scored; retain
    is unchanged, so a smaller request is compared on the same patient and the same retain questions.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"task.forget_limit must be a positive integer or null, got {limit!r}")
    if limit > len(task.forget):
        raise ValueError(f"task.forget_limit={limit} but task {task.name!r} has only {len(task.forget)} forget "
                         f"items; valid: 1..{len(task.forget)} (raise task.forget_ratio for more)")
    task.forget, task.forget_unrequested = task.forget[:limit], task.forget[limit:] + task.forget_unrequested
    return task
