"""The watchdog reads every user message first: is it a request to forget something, and what?

`embedding` (offline default): the intent classifier (repair/interactive/classifier.py) decides, rules extract what.
`llm`: a chat model (prompt in config) answers in JSON; what it extracts is still checked by the scope guard.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, Sequence

from omegaconf import DictConfig

from repair.interactive.classifier import ClassifierConfig, train_default
from repair.interactive.extract import KINDS, ForgetRequest, Turn, extract
from repair.interactive.llm import ChatModel, ChatModelSettings, ask_json, build_chat_model
from repair.patient import Patient
from repair.registry import Registry
from repair.settings import build, plain

log = logging.getLogger(__name__)
WATCHDOGS: Registry = Registry("watchdog")


@dataclass
class WatchdogSettings:
    """Settings every watchdog has; the values are in conf/watchdog/*.yaml (the one place the defaults live)."""

    name: str


@dataclass
class EmbeddingWatchdogSettings(ClassifierConfig, WatchdogSettings):
    """The intent classifier's settings (repair/interactive/classifier.py)."""


@dataclass
class LLMWatchdogSettings(ChatModelSettings, WatchdogSettings):
    def check(self) -> None:
        self.check_chat("watchdog")


class Watchdog(Protocol):
    name: str

    def detect(self, message: str, history: Sequence[Turn]) -> ForgetRequest | None:
        """A ForgetRequest if `message` asks to forget something, else None."""


@WATCHDOGS.register("embedding")
class EmbeddingWatchdog:
    name = "embedding"
    Settings = EmbeddingWatchdogSettings

    def __init__(self, settings: EmbeddingWatchdogSettings, cache_dir: str, **_):
        self.settings = settings
        self.classifier = train_default(settings, cache_dir)

    def score(self, message: str) -> float:
        return float(self.classifier.predict_proba([message])[0])

    def detect(self, message: str, history: Sequence[Turn]) -> ForgetRequest | None:
        p = self.score(message)
        if p < self.settings.threshold:
            return None
        request = extract(message, history)
        request.score, request.backend = p, self.name
        return request


@WATCHDOGS.register("llm")
class LLMWatchdog:
    """Asks a chat model; a reply that is not the JSON asked for counts as 'no request' and is logged."""

    name = "llm"
    Settings = LLMWatchdogSettings

    def __init__(self, settings: LLMWatchdogSettings, cache_dir: str, patient: Patient | None = None,
                 chat_model: ChatModel | None = None):
        self.settings = settings
        self.model = chat_model or build_chat_model(settings.model, patient, cache_dir, settings.max_new_tokens)

    def detect(self, message: str, history: Sequence[Turn]) -> ForgetRequest | None:
        last = history[-1] if history else Turn("(none)", "(none)")
        prompt = self.settings.prompt.format(message=message, last_user=last.user, last_answer=last.patient)
        try:
            data, reply = ask_json(self.model, self.settings.system, prompt)
        except ValueError as err:
            log.warning("watchdog=llm: %s; treating the message as no request", err)
            return None
        if not data.get("forget"):
            return None
        kind, subject = str(data.get("kind", "")), str(data.get("subject") or "").strip()
        if kind not in KINDS or kind == "unclear" or (kind != "pair" and not subject):
            request = extract(message, history)  # the model said "forget" but not clearly what: use the rules
            request.notes.append(f"chat model reply had no usable kind/subject: {data}")
        elif kind == "pair":
            request = ForgetRequest(message, "pair", f"the exchange {last.user!r} → {last.patient!r}",
                                    subject=subject, pair=history[-1] if history else None)
            if not history:
                request.kind = "unclear"
        else:
            request = ForgetRequest(message, kind, str(data.get("target") or subject), subject=subject,
                                    notes=["extracted by the chat model"])
        request.backend = self.name
        return request


def build_watchdog(cfg: DictConfig | dict, cache_dir: str, patient: Patient | None = None,
                   chat_model: ChatModel | None = None) -> Watchdog:
    """The watchdog a composed `conf/watchdog/*.yaml` section names, its settings checked first (unknown, missing
    or ill-typed keys fail here, naming the valid ones)."""
    values = plain(cfg)
    cls = WATCHDOGS.get(values.get("name", "<missing>"))  # an unknown name fails first, listing the valid ones
    return cls(build(cls.Settings, values, "watchdog"), cache_dir=cache_dir, patient=patient, chat_model=chat_model)
