"""Does the patient know the person a forget request names? Asked before any edit, so that a request about someone
it was never taught changes nothing.

A never-taught name still gets fluent answers: a small patient fills the template with another person's facts, or
with digits it is unsure of. Three signs tell them from knowledge, per probe answer:

- a refusal ("I don't know who that is") is no knowledge;
- an answer carrying a fact the task taught about *someone else* (and none of this person's) is borrowed;
- otherwise the answer's confidence: the lowest log-probability of its tokens under teacher forcing. Taught answers
  are recalled near-deterministically (≈ -0.05 on the default patient); made-up ones have a guessed token (≈ -1).

A person's score is the median over the probes (refused and borrowed answers count as -inf); the patient knows
them when it reaches a threshold calibrated on the patient itself: people it was taught (the task's retain buffer)
against names it never saw (the task's subject pool). The calibration is cached in the ledger folder.
"""
from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from repair.attacks.common import answer_logprobs
from repair.generation import generate
from repair.io import write_json
from repair.patient import Patient
from repair.tasks import QA, Task
from repair.tasks.refusals import is_refusal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnowledgeSettings:
    enabled: bool = True
    references: int = 4          # taught and never-taught people the threshold is calibrated on (each)

    @classmethod
    def from_cfg(cls, cfg: dict) -> "KnowledgeSettings":
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown chat.knowledge setting(s) {unknown}; valid: "
                             f"{', '.join(sorted(cls.__dataclass_fields__))}")
        settings = cls(**cfg)
        if settings.references < 1:
            raise ValueError(f"chat.knowledge.references must be >= 1, got {settings.references}")
        return settings


@dataclass
class Assessment:
    known: bool
    score: float                 # median over probes of the answer's lowest token log-prob (-inf: refused/borrowed)
    threshold: float
    probes: list[dict] = field(default_factory=list)  # question, answer, confidence, refused, borrowed_from

    def evidence(self, limit: int = 2) -> str:
        """The answers that show the patient does not know the person, in a sentence."""
        parts = []
        for p in self.probes[:limit]:
            why = ("a refusal" if p["refused"] else f"{', '.join(p['borrowed_from'])}'s fact" if p["borrowed_from"]
                   else f"a guess, confidence {p['confidence']:.2f} < {self.threshold:.2f}")
            parts.append(f"{p['question']!r} → {p['answer']!r} ({why})")
        return "; ".join(parts)

    def namesakes(self, subject: str) -> list[str]:
        """People whose facts the answers carried and who share a name part with `subject` ("Saskia" → "Saskia
        Jorgensen"): whom the user may have meant."""
        parts = set(subject.lower().split())
        return sorted({o for p in self.probes for o in p["borrowed_from"] if parts & set(o.lower().split())})

    def to_dict(self) -> dict:
        """JSON-safe: -inf (a refused or borrowed answer) becomes None."""
        data = asdict(self)
        data["score"] = _finite(self.score)
        for row in data["probes"]:
            row["value"] = _finite(row["value"])
        return data


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


def answer_confidence(patient: Patient, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
    """Each answer's lowest token log-probability given its question (teacher-forced, closing token included)."""
    return [float(lp.min()) if len(lp) else -math.inf
            for lp in answer_logprobs(patient, [QA(q, a) for q, a in zip(questions, answers)])]


def fact_owners(task: Task) -> dict[str, set[str]]:
    """Every fact the task taught (lower case) → the people it belongs to."""
    owners: dict[str, set[str]] = {}
    for q in [*task.forget, *task.retain, *task.retain_buffer]:
        if q.fact and q.subject:
            owners.setdefault(q.fact.lower(), set()).add(q.subject)
    return owners


def borrowed_from(answer: str, subject: str, owners: dict[str, set[str]]) -> list[str]:
    """The other people whose taught facts `answer` carries, unless it also carries one of `subject`'s own."""
    low = answer.lower()
    carried = [people for fact, people in owners.items() if fact in low]
    if any(subject in people for people in carried):
        return []
    return sorted({p for people in carried for p in people})


class KnowledgeCheck:
    """`assess(subject, probes, answers)`: whether the patient knows `subject`, from its answers to the probes."""

    def __init__(self, patient: Patient, task: Task, settings: KnowledgeSettings,
                 probes_for: Callable[[str], list[str]], max_new_tokens: int, cache_file: str | Path | None = None):
        """`max_new_tokens`: the length the assessed answers are generated with (confidence depends on it)."""
        self.patient, self.task, self.settings, self.max_new_tokens = patient, task, settings, max_new_tokens
        self.probes_for, self.cache_file = probes_for, Path(cache_file) if cache_file else None
        self.owners = fact_owners(task)
        self._calibration: dict | None = None

    def references(self) -> tuple[list[str], list[str]]:
        """People the patient was taught (the retain buffer's) and names it never saw (the subject pool)."""
        n = self.settings.references
        taught = list(dict.fromkeys(q.subject for q in self.task.retain_buffer if q.subject))[:n]
        return taught, list(self.task.subject_pool[:n])

    @property
    def available(self) -> bool:
        taught, unseen = self.references()
        return self.settings.enabled and bool(taught) and bool(unseen) and bool(self.owners)

    def _rows(self, subject: str, probes: Sequence[str], answers: Sequence[str],
              confidence: Sequence[float]) -> list[dict]:
        rows = []
        for q, a, c in zip(probes, answers, confidence):
            refused, borrowed = is_refusal(a), borrowed_from(a, subject, self.owners)
            rows.append({"question": q, "answer": a, "confidence": round(c, 4), "refused": refused,
                         "borrowed_from": borrowed, "value": -math.inf if refused or borrowed else c})
        return rows

    def score(self, rows: Sequence[dict]) -> float:
        return statistics.median(r["value"] for r in rows) if rows else -math.inf

    def calibration(self) -> dict:
        """The threshold between the taught and the never-taught references' scores (cached)."""
        if self._calibration is not None:
            return self._calibration
        taught, unseen = self.references()
        probes_of = {subject: self.probes_for(subject) for subject in [*taught, *unseen]}
        key = {"probes": probes_of, "max_new_tokens": self.max_new_tokens}
        if self.cache_file is not None and self.cache_file.exists():
            try:
                cached = json.loads(self.cache_file.read_text())
            except (OSError, ValueError) as err:
                log.warning("knowledge calibration %s unreadable (%s); recomputing", self.cache_file, err)
                cached = {}
            if cached.get("key") == key:
                self._calibration = cached
                return cached
        questions = [q for probes in probes_of.values() for q in probes]  # one batched pass for every reference
        answers = generate(self.patient, questions, max_new_tokens=self.max_new_tokens, desc="calibrate")
        confidence = answer_confidence(self.patient, questions, answers)
        scores, start = {}, 0
        for subject, probes in probes_of.items():
            end = start + len(probes)
            scores[subject] = self.score(self._rows(subject, probes, answers[start:end], confidence[start:end]))
            start = end
        low_known = min(scores[s] for s in taught)
        high_unseen = max(scores[s] for s in unseen)
        separable = low_known > high_unseen
        # halfway between the weakest taught and the strongest never-taught score, at most 1 nat below the former
        threshold = (low_known + max(high_unseen, low_known - 2.0)) / 2 if separable else None
        if not separable:
            log.warning("knowledge check off: a never-taught reference (%.3f) scores as high as a taught one (%.3f)",
                        high_unseen, low_known)
        self._calibration = {"key": key, "threshold": threshold, "separable": separable,
                             "scores": {s: _finite(v) for s, v in scores.items()}}
        if self.cache_file is not None:
            write_json(self.cache_file, self._calibration)
        return self._calibration

    def ask(self, subject: str) -> tuple[list[str], list[str]]:
        """The probes about `subject` and the patient's answers to them now (as a forget request would ask)."""
        probes = self.probes_for(subject)
        return probes, generate(self.patient, probes, max_new_tokens=self.max_new_tokens, desc="probes")

    def assess(self, subject: str, probes: Sequence[str], answers: Sequence[str]) -> Assessment | None:
        """None where the check cannot tell (turned off, no references in the task, or references that overlap)."""
        if not self.available:
            return None
        calibration = self.calibration()
        if not calibration["separable"]:
            return None
        rows = self._rows(subject, probes, answers, answer_confidence(self.patient, probes, answers))
        score = self.score(rows)
        return Assessment(score >= calibration["threshold"], score, calibration["threshold"],
                          sorted(rows, key=lambda r: r["value"]))
