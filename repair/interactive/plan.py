"""RepairPlan: what the surgeon asks the session to do — a typed, validated declaration, never code.

The session executes only what a plan can say: which thing to forget, the probe questions the edit is keyed on, the
paraphrases verification also asks, and the edit's method, layers and rank, each checked against the limits in
config and the patient. Anything else — an unknown field, a method outside the allowed list, a layer the patient
does not have, a probe that does not mention the subject — rejects the plan with the reason.
"""
from __future__ import annotations

import json
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PLAN_KINDS = ("person", "pair", "fact", "topic")


class PlanRejected(ValueError):
    """A plan (or the request behind it) was refused; the message says why. Nothing was changed."""


class RepairPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    kind: Literal["person", "pair", "fact", "topic"]
    target: str = Field(min_length=1, max_length=200, description="what to forget, in words")
    subject: str = Field(default="", max_length=200, description="the span every probe contains (STAMP's keys)")
    probes: list[str] = Field(min_length=1, max_length=64, description="questions the edit is keyed on")
    paraphrases: list[str] = Field(default_factory=list, max_length=64,
                                   description="other wordings, asked by verification only")
    method: str = "stamp"
    layers: Union[Literal["auto"], list[int]] = "auto"
    rank: int | None = Field(default=None, ge=1, le=4096)
    rationale: str = Field(default="", max_length=500)

    @field_validator("probes", "paraphrases")
    @classmethod
    def _questions(cls, items: list[str]) -> list[str]:
        cleaned = [q.strip() for q in items]
        bad = [q for q in cleaned if not 3 <= len(q) <= 300]
        if bad:
            raise ValueError(f"questions must be 3-300 characters, got {bad[:2]}")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("questions repeat")
        return cleaned

    @field_validator("layers")
    @classmethod
    def _layers(cls, layers):
        if isinstance(layers, list):
            if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
                raise ValueError(f"layers must be 'auto' or distinct non-negative indices, got {layers}")
        return layers

    @model_validator(mode="after")
    def _subject_in_probes(self) -> "RepairPlan":
        if self.kind != "pair" and not self.subject:
            raise ValueError(f"a {self.kind} plan needs a subject (the span its probes are keyed on)")
        if self.subject:
            missing = [q for q in self.probes if self.subject not in q]
            if missing:
                raise ValueError(f"every probe must contain the subject {self.subject!r}; these do not: {missing[:2]}")
        return self

    @classmethod
    def parse(cls, data: dict | str) -> "RepairPlan":
        """A plan from a dict or JSON text; PlanRejected names every problem."""
        try:
            return cls.model_validate_json(data) if isinstance(data, str) else cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'plan'}: {e['msg']}" for e in err.errors())
            raise PlanRejected(f"invalid repair plan: {problems}") from None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), ensure_ascii=False)


def check_limits(plan: RepairPlan, allowed_methods: list[str], num_layers: int, max_probes: int,
                 max_layers: int, max_rank: int) -> None:
    """Limits that depend on config and the patient, not on the plan alone."""
    if plan.method not in allowed_methods:
        raise PlanRejected(f"plan asks for method {plan.method!r}; allowed: {', '.join(allowed_methods)}")
    if isinstance(plan.layers, list):
        bad = [l for l in plan.layers if l >= num_layers]
        if bad:
            raise PlanRejected(f"plan names layer(s) {bad} the patient does not have; valid: 0..{num_layers - 1}")
        if len(plan.layers) > max_layers:
            raise PlanRejected(f"plan edits {len(plan.layers)} layers; at most {max_layers} allowed")
    if len(plan.probes) + len(plan.paraphrases) > max_probes:
        raise PlanRejected(f"plan has {len(plan.probes) + len(plan.paraphrases)} probes and paraphrases; "
                           f"at most {max_probes} allowed")
    if plan.method.endswith("lowrank") and plan.rank is None:
        raise PlanRejected(f"method {plan.method!r} needs a rank")
    if plan.rank is not None and plan.rank > max_rank:
        raise PlanRejected(f"plan asks for rank {plan.rank}; at most {max_rank} allowed")
