"""The surgeon turns a ForgetRequest into a RepairPlan: probe questions the edit is keyed on, paraphrases that
verification also asks, and the edit's method, layers and rank.

`template` (offline default): probes from question templates in config, per kind of target (a person's attributes,
a topic, a quoted fact, an earlier exchange). `llm`: a chat model writes the plan as JSON; it is validated like any
plan, and its subject must be something the user named (scope guard).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

from omegaconf import DictConfig

from repair.interactive.extract import ForgetRequest, Turn
from repair.interactive.llm import ChatModel, ChatModelSettings, ask_json, build_chat_model
from repair.interactive.plan import PlanRejected, RepairPlan, check_limits
from repair.patient import Patient
from repair.registry import Registry
from repair.settings import build, plain, require

log = logging.getLogger(__name__)
SURGEONS: Registry = Registry("surgeon")


@dataclass
class SurgeonSettings:
    """Settings every surgeon has; the values are in conf/surgeon/*.yaml (the one place the defaults live)."""

    name: str
    method: str                          # the edit's defaults: the method group's method, layers and rank
    layers: Literal["auto"] | list[int]
    rank: int | None
    allowed_methods: list[str] | None    # what a plan may ask for (null or empty: `method` only)
    max_probes: int
    max_layers: int
    max_rank: int

    def check(self) -> None:
        for key in ("max_probes", "max_layers", "max_rank"):
            require(getattr(self, key) >= 1, f"surgeon.{key}", getattr(self, key), "an integer >= 1")
        require(self.rank is None or self.rank >= 1, "surgeon.rank", self.rank, "an integer >= 1, or null")


@dataclass
class PersonTemplates:
    attributes: list[str] | None        # probed when the request names none (null: every attribute in `questions`)
    questions: dict[str, list[str]]     # attribute → [probe template, paraphrase templates...], with {subject}

    def check(self) -> None:
        for attribute, templates in self.questions.items():
            require(bool(templates) and all(isinstance(t, str) for t in templates),
                    f"surgeon.person.questions.{attribute}", templates, "a non-empty list of templates")


@dataclass
class SubjectTemplates:
    probes: list[str]                   # templates with {subject}
    paraphrases: list[str]


@dataclass
class PairTemplates:
    paraphrases: list[str]              # templates with {question}


@dataclass
class TemplateSurgeonSettings(SurgeonSettings):
    paraphrases_per_probe: int
    person: PersonTemplates             # given as mappings, built into these (and checked) in __post_init__
    topic: SubjectTemplates
    fact: SubjectTemplates
    pair: PairTemplates

    def __post_init__(self) -> None:
        self.person = build(PersonTemplates, self.person, "surgeon.person")
        self.topic = build(SubjectTemplates, self.topic, "surgeon.topic")
        self.fact = build(SubjectTemplates, self.fact, "surgeon.fact")
        self.pair = build(PairTemplates, self.pair, "surgeon.pair")

    def check(self) -> None:
        super().check()
        require(self.paraphrases_per_probe >= 0, "surgeon.paraphrases_per_probe", self.paraphrases_per_probe,
                "an integer >= 0")
        for kind in ("topic", "fact"):
            probes = getattr(self, kind).probes
            require(bool(probes), f"surgeon.{kind}.probes", probes, "a non-empty list of templates with {subject}")


@dataclass
class LLMSurgeonSettings(ChatModelSettings, SurgeonSettings):
    def check(self) -> None:
        super().check()
        self.check_chat("surgeon")


class Surgeon(Protocol):
    name: str

    def plan(self, request: ForgetRequest, history: Sequence[Turn] = ()) -> RepairPlan:
        """A validated plan, or PlanRejected with the reason."""


class _Base:
    def __init__(self, settings: SurgeonSettings, num_layers: int):
        self.settings, self.num_layers = settings, num_layers
        self.allowed = list(settings.allowed_methods or [settings.method])

    def edit_defaults(self) -> dict:
        return {"method": self.settings.method, "layers": self.settings.layers, "rank": self.settings.rank}

    def validated(self, data: dict) -> RepairPlan:
        plan = RepairPlan.parse(data)
        check_limits(plan, self.allowed, self.num_layers, self.settings.max_probes, self.settings.max_layers,
                     self.settings.max_rank)
        return plan


@SURGEONS.register("template")
class TemplateSurgeon(_Base):
    name = "template"
    Settings = TemplateSurgeonSettings

    def __init__(self, settings: TemplateSurgeonSettings, num_layers: int, **_):
        super().__init__(settings, num_layers)
        questions = settings.person.questions
        chosen = settings.person.attributes or list(questions)
        unknown = [a for a in chosen if a not in questions]
        if unknown:  # e.g. another task's attributes: probe the ones with templates
            log.warning("surgeon.person.attributes %s have no question templates (known: %s); not probed",
                        unknown, ", ".join(questions))
        self.person_attributes = [a for a in chosen if a in questions] or list(questions)

    def _questions(self, request: ForgetRequest) -> tuple[list[str], list[str]]:
        s = request.subject
        if request.kind == "person":
            questions = self.settings.person.questions
            named = [a for a in request.attributes if a in questions]
            probes, paraphrases = [], []
            for attribute in named or self.person_attributes:
                first, *rest = questions[attribute]
                probes.append(first.format(subject=s))
                paraphrases += [q.format(subject=s) for q in rest[:self.settings.paraphrases_per_probe]]
            return probes, paraphrases
        if request.kind == "pair":
            question = request.pair.user
            return [question], [t.format(question=question) for t in self.settings.pair.paraphrases]
        templates = getattr(self.settings, request.kind)
        return [t.format(subject=s) for t in templates.probes], [t.format(subject=s) for t in templates.paraphrases]

    def plan(self, request: ForgetRequest, history: Sequence[Turn] = ()) -> RepairPlan:
        if request.kind == "unclear":
            raise PlanRejected("I could not tell what to forget: " + "; ".join(request.notes or ["no target"]) +
                               ". Name the person, quote the text, or say 'your last answer'.")
        probes, paraphrases = self._questions(request)
        subject = request.subject
        if request.kind == "pair" and (not subject or subject not in request.pair.user):
            # no name in the question: key the edit on the question's own words, not on the chat template's tokens
            subject = request.pair.user.strip().rstrip("?.!").strip()
        return self.validated({"kind": request.kind, "target": request.target, "subject": subject,
                               "probes": probes, "paraphrases": [p for p in paraphrases if p not in probes],
                               "rationale": f"template plan for a {request.kind}", **self.edit_defaults()})


@SURGEONS.register("llm")
class LLMSurgeon(_Base):
    """A chat model writes the plan as JSON; missing edit settings come from config, everything is validated."""

    name = "llm"
    Settings = LLMSurgeonSettings

    def __init__(self, settings: LLMSurgeonSettings, num_layers: int, patient: Patient | None = None,
                 cache_dir: str = "", chat_model: ChatModel | None = None):
        super().__init__(settings, num_layers)
        self.model = chat_model or build_chat_model(settings.model, patient, cache_dir, settings.max_new_tokens)

    def plan(self, request: ForgetRequest, history: Sequence[Turn] = ()) -> RepairPlan:
        if request.kind == "unclear":
            raise PlanRejected("I could not tell what to forget. Name the person, quote the text, or say "
                               "'your last answer'.")
        pair = request.pair or Turn("", "")
        prompt = self.settings.prompt.format(request=request.message, kind=request.kind, target=request.target,
                                           subject=request.subject, question=pair.user, answer=pair.patient,
                                           methods=", ".join(self.allowed), num_layers=self.num_layers)
        try:
            data, reply = ask_json(self.model, self.settings.system, prompt)
        except ValueError as err:
            raise PlanRejected(f"the surgeon model did not answer with a JSON plan ({err})") from None
        merged = {**self.edit_defaults(), "kind": request.kind, "target": request.target,
                  "subject": request.subject, **data}
        return self.validated(merged)


def build_surgeon(cfg: DictConfig | dict, num_layers: int, patient: Patient | None = None, cache_dir: str = "",
                  chat_model: ChatModel | None = None) -> Surgeon:
    """The surgeon a composed `conf/surgeon/*.yaml` section names, its settings checked first (unknown, missing or
    ill-typed keys fail here, naming the valid ones)."""
    values = plain(cfg)
    cls = SURGEONS.get(values.get("name", "<missing>"))  # an unknown name fails first, listing the valid ones
    return cls(build(cls.Settings, values, "surgeon"), num_layers, patient=patient, cache_dir=cache_dir,
               chat_model=chat_model)
