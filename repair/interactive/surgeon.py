"""The surgeon turns a ForgetRequest into a RepairPlan: probe questions the edit is keyed on, paraphrases that
verification also asks, and the edit's method, layers and rank.

`template` (offline default): probes from question templates in config, per kind of target (a person's attributes,
a topic, a quoted fact, an earlier exchange). `llm`: a chat model writes the plan as JSON; it is validated like any
plan, and its subject must be something the user named (scope guard).
"""
from __future__ import annotations

import logging
from typing import Protocol, Sequence

from omegaconf import DictConfig, OmegaConf

from repair.interactive.extract import ForgetRequest, Turn
from repair.interactive.llm import ChatModel, ask_json, build_chat_model
from repair.interactive.plan import PlanRejected, RepairPlan, check_limits
from repair.patient import Patient
from repair.registry import Registry

log = logging.getLogger(__name__)
SURGEONS: Registry = Registry("surgeon")


class Surgeon(Protocol):
    name: str

    def plan(self, request: ForgetRequest, history: Sequence[Turn] = ()) -> RepairPlan:
        """A validated plan, or PlanRejected with the reason."""


class _Base:
    def __init__(self, cfg: dict, num_layers: int):
        self.cfg, self.num_layers = cfg, num_layers
        self.allowed = list(cfg.get("allowed_methods") or [cfg["method"]])

    def edit_defaults(self) -> dict:
        rank = self.cfg.get("rank")
        return {"method": self.cfg["method"], "layers": self.cfg.get("layers", "auto"),
                "rank": int(rank) if rank is not None else None}

    def validated(self, data: dict) -> RepairPlan:
        plan = RepairPlan.parse(data)
        check_limits(plan, self.allowed, self.num_layers, int(self.cfg.get("max_probes", 24)),
                     int(self.cfg.get("max_layers", 8)), int(self.cfg.get("max_rank", 1024)))
        return plan


@SURGEONS.register("template")
class TemplateSurgeon(_Base):
    name = "template"

    def __init__(self, cfg: dict, num_layers: int, **_):
        super().__init__(cfg, num_layers)
        questions = cfg["person"]["questions"]
        chosen = cfg["person"].get("attributes") or list(questions)
        unknown = [a for a in chosen if a not in questions]
        if unknown:  # e.g. another task's attributes: probe the ones with templates
            log.warning("surgeon.person.attributes %s have no question templates (known: %s); not probed",
                        unknown, ", ".join(questions))
        self.person_attributes = [a for a in chosen if a in questions] or list(questions)

    def _questions(self, request: ForgetRequest) -> tuple[list[str], list[str]]:
        s = request.subject
        if request.kind == "person":
            questions = self.cfg["person"]["questions"]
            named = [a for a in request.attributes if a in questions]
            probes, paraphrases = [], []
            for attribute in named or self.person_attributes:
                first, *rest = questions[attribute]
                probes.append(first.format(subject=s))
                paraphrases += [q.format(subject=s) for q in rest[: int(self.cfg.get("paraphrases_per_probe", 1))]]
            return probes, paraphrases
        if request.kind == "pair":
            question = request.pair.user
            return [question], [t.format(question=question) for t in self.cfg["pair"]["paraphrases"]]
        templates = self.cfg[request.kind]
        return ([t.format(subject=s) for t in templates["probes"]],
                [t.format(subject=s) for t in templates.get("paraphrases", [])])

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

    def __init__(self, cfg: dict, num_layers: int, patient: Patient | None = None, cache_dir: str = "",
                 chat_model: ChatModel | None = None):
        super().__init__(cfg, num_layers)
        for key in ("system", "prompt"):
            if not cfg.get(key):
                raise ValueError(f"surgeon=llm needs surgeon.{key} (the prompt text)")
        self.model = chat_model or build_chat_model(cfg.get("model"), patient, cache_dir,
                                                    int(cfg.get("max_new_tokens", 384)))

    def plan(self, request: ForgetRequest, history: Sequence[Turn] = ()) -> RepairPlan:
        if request.kind == "unclear":
            raise PlanRejected("I could not tell what to forget. Name the person, quote the text, or say "
                               "'your last answer'.")
        pair = request.pair or Turn("", "")
        prompt = self.cfg["prompt"].format(request=request.message, kind=request.kind, target=request.target,
                                           subject=request.subject, question=pair.user, answer=pair.patient,
                                           methods=", ".join(self.allowed), num_layers=self.num_layers)
        try:
            data, reply = ask_json(self.model, self.cfg["system"], prompt)
        except ValueError as err:
            raise PlanRejected(f"the surgeon model did not answer with a JSON plan ({err})") from None
        merged = {**self.edit_defaults(), "kind": request.kind, "target": request.target,
                  "subject": request.subject, **data}
        return self.validated(merged)


def build_surgeon(cfg: DictConfig | dict, num_layers: int, patient: Patient | None = None, cache_dir: str = "",
                  chat_model: ChatModel | None = None) -> Surgeon:
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return SURGEONS.get(cfg.get("name", "<missing>"))(cfg, num_layers, patient=patient, cache_dir=cache_dir,
                                                      chat_model=chat_model)
