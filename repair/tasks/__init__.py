"""Task suites: what the patient is taught, what it must forget, what it must keep, and how answers are scored."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

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


@dataclass
class Task:
    """Splits of one task suite. Forget, retain and holdout are disjoint by subject; the retain buffer is a
    subset of retain (what a method may look at); `idk` teaches the patient to refuse on unknown subjects, so
    that it has a refusal behaviour for unlearning to steer into."""

    name: str
    scoring: str  # "rouge": free-text answers scored by ROUGE-L recall
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
        data = {k: [asdict(q) for q in getattr(self, k)] for k in ("forget", "retain", "idk")}
        return hashlib.sha256(json.dumps([self.name, data], sort_keys=True).encode()).hexdigest()[:16]

    def splits(self) -> dict[str, list[QA]]:
        return {"forget": self.forget, "retain": self.retain, "retain_buffer": self.retain_buffer,
                "holdout": self.holdout, "idk": self.idk}


def build_task(cfg: DictConfig | dict, seed: int) -> Task:
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    from repair.tasks import pii  # noqa: F401  (registers the built-in suites)

    return TASKS.get(cfg.get("name", "<missing>"))(cfg, seed)
