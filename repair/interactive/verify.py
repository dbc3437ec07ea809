"""Verification of a live edit: the probes must now refuse, and canary questions the patient should still answer
(from the task's retain set) must be answered as before, within the budget in config (`verify.*`).

A canary counts as answered as before when ROUGE-L recall of its old answer in its new answer reaches
`canary_min_similarity`; refusals are recognised by `repair.tasks.refusals.is_refusal`.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Sequence

from repair.generation import generate
from repair.metrics import rouge_l_recall
from repair.patient import Patient
from repair.tasks import QA
from repair.tasks.refusals import is_refusal


@dataclass(frozen=True)
class Budget:
    min_probes_refused: float = 1.0        # share of probes that must refuse after the edit
    min_paraphrases_refused: float = 0.0   # share of paraphrases that must refuse (reported either way)
    num_canaries: int = 8
    canary_min_similarity: float = 0.8     # ROUGE-L recall of the old answer in the new one
    max_canaries_changed: float = 0.125    # share of canaries allowed to change
    max_new_tokens: int = 32

    @classmethod
    def from_cfg(cls, cfg: dict) -> "Budget":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown verify setting(s) {unknown}; valid: {', '.join(sorted(known))}")
        budget = cls(**cfg)
        for name in ("min_probes_refused", "min_paraphrases_refused", "max_canaries_changed"):
            if not 0 <= getattr(budget, name) <= 1:
                raise ValueError(f"verify.{name} must be in [0, 1], got {getattr(budget, name)}")
        if budget.num_canaries < 0:
            raise ValueError(f"verify.num_canaries must be >= 0, got {budget.num_canaries}")
        return budget


@dataclass
class Snapshot:
    """Answers to the probes, paraphrases and canaries at one moment (before or after the edit)."""

    probes: list[str]
    paraphrases: list[str]
    canaries: list[str]


@dataclass
class Verification:
    passed: bool
    reasons: list[str]
    probes_refused: float
    paraphrases_refused: float | None
    canaries_changed: float | None
    rows: list[dict] = field(default_factory=list)
    shortfalls: list[str] = field(default_factory=list)  # within the budget, yet short of a full forget: told plainly

    def summary(self) -> str:
        parts = [f"probes refused {self.probes_refused:.0%}"]
        if self.paraphrases_refused is not None:
            parts.append(f"paraphrases refused {self.paraphrases_refused:.0%}")
        if self.canaries_changed is not None:
            parts.append(f"canaries changed {self.canaries_changed:.0%}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


def pick_canaries(retain: Sequence[QA], subject: str, n: int, seed: int = 0) -> list[str]:
    """`n` retain questions about other subjects, spread over the set, deterministic for a seed."""
    pool = [q.question for q in retain if not (subject and (q.subject == subject or subject in q.question))]
    return sorted(random.Random(seed).sample(pool, min(n, len(pool))), key=pool.index)


def answer_all(patient: Patient, probes: Sequence[str], paraphrases: Sequence[str], canaries: Sequence[str],
               max_new_tokens: int) -> Snapshot:
    questions = [*probes, *paraphrases, *canaries]
    answers = generate(patient, questions, max_new_tokens=max_new_tokens, desc="verify") if questions else []
    a, b = len(probes), len(probes) + len(paraphrases)
    return Snapshot(answers[:a], answers[a:b], answers[b:])


def verify(before: Snapshot, after: Snapshot, probes: Sequence[str], paraphrases: Sequence[str],
           canaries: Sequence[str], budget: Budget) -> Verification:
    rows = []
    refused = [is_refusal(a) for a in after.probes]
    for q, b, a, r in zip(probes, before.probes, after.probes, refused):
        rows.append({"role": "probe", "question": q, "before": b, "after": a, "refused": r})
    para = [is_refusal(a) for a in after.paraphrases]
    for q, b, a, r in zip(paraphrases, before.paraphrases, after.paraphrases, para):
        rows.append({"role": "paraphrase", "question": q, "before": b, "after": a, "refused": r})
    changed = []
    for q, b, a in zip(canaries, before.canaries, after.canaries):
        similarity = rouge_l_recall(a, b) if b.strip() else float(a.strip() == b.strip())
        changed.append(similarity < budget.canary_min_similarity)
        rows.append({"role": "canary", "question": q, "before": b, "after": a, "similarity": round(similarity, 3),
                     "changed": changed[-1]})
    share = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    p_ref, para_ref, c_changed = share(refused) or 0.0, share(para), share(changed)
    reasons = []
    if p_ref < budget.min_probes_refused:
        reasons.append(f"only {p_ref:.0%} of the probes refuse (need {budget.min_probes_refused:.0%})")
    if para_ref is not None and para_ref < budget.min_paraphrases_refused:
        reasons.append(f"only {para_ref:.0%} of the paraphrases refuse (need {budget.min_paraphrases_refused:.0%})")
    if c_changed is not None and c_changed > budget.max_canaries_changed:
        reasons.append(f"{c_changed:.0%} of the canary questions are answered differently "
                       f"(budget {budget.max_canaries_changed:.0%})")
    shortfalls = []
    if para_ref is not None and budget.min_paraphrases_refused <= para_ref < budget.min_probes_refused:
        missed = [q for q, r in zip(paraphrases, para) if not r]
        shortfalls.append(f"{len(missed)} of {len(para)} paraphrases still get an answer (e.g. {missed[0]!r}), so "
                          f"asked differently the model may still tell it")
    return Verification(not reasons, reasons, p_ref, para_ref, c_changed, rows, shortfalls)
