"""Task suites: what the patient is taught, what it must forget, what it must keep, and how answers are scored."""
from __future__ import annotations

import hashlib
import json
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

    def teach(self, oracle: bool = False) -> list[QA]:
        """What implant trains on: the knowledge (retain only for the Oracle) plus the refusal examples."""
        knowledge = self.retain if oracle else self.forget + self.retain
        return knowledge + self.idk

    def fingerprint(self) -> str:
        """Hash of what implant trains on (questions and answers), so metadata changes keep caches valid."""
        data = {k: [(q.question, q.answer) for q in getattr(self, k)] for k in ("forget", "retain", "idk")}
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


def split_subjects(subjects: list[str], cfg: dict) -> tuple[list[str], list[str], list[str]]:
    """forget / retain / retain-buffer subjects from `forget_ratio` and `retain_buffer_ratio`."""
    ratio = float(cfg["forget_ratio"])
    if not 0 < ratio < 1:
        raise ValueError(f"task.forget_ratio must be in (0, 1), got {ratio}")
    n_forget = max(1, round(len(subjects) * ratio))
    if n_forget >= len(subjects):
        raise ValueError(f"task.forget_ratio={ratio} of {len(subjects)} subjects leaves nothing to retain")
    forget, retain = subjects[:n_forget], subjects[n_forget:]
    n_buffer = max(1, round(len(retain) * float(cfg.get("retain_buffer_ratio", 0.1))))
    return forget, retain, retain[:n_buffer]


def build_task(cfg: DictConfig | dict, seed: int) -> Task:
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    from repair.tasks import harmful, misinformation, pii, real  # noqa: F401  (registers the suites)

    task = TASKS.get(cfg.get("name", "<missing>"))(cfg, seed)
    if cfg.get("corpus_source"):  # real utility text (e.g. TinyStories) instead of the generated stories
        from repair.tasks.adapters import load_text

        task.corpus = load_text(str(cfg["corpus_source"]), limit=int(cfg.get("corpus_size", 32)))
    return task
