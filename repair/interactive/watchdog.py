"""The watchdog reads every user message first: is it a request to forget something, and what?

`embedding` (offline default): the intent classifier (repair/interactive/classifier.py) decides, rules extract what.
A long message is also scored sentence by sentence and two sentences at a time: a request buried in chat dilutes the
whole message's embedding (#20: 0.41 at 342 characters, 0.81 at 121), not the sentence that makes it. The message's
score is the best of its pieces, and what to forget is extracted from the best piece.
`llm`: a chat model (prompt in config) answers in JSON; what it extracts is still checked by the scope guard.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Protocol, Sequence

from omegaconf import DictConfig

from repair.interactive.classifier import ClassifierConfig, IntentClassifier, train_default
from repair.interactive.extract import KINDS, ForgetRequest, Turn, extract
from repair.interactive.llm import ChatModel, ChatModelSettings, ask_json, build_chat_model
from repair.patient import Patient
from repair.registry import Registry
from repair.settings import build, plain

log = logging.getLogger(__name__)
WATCHDOGS: Registry = Registry("watchdog")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”»)]*\s+|\s*\n+\s*")


def pieces(message: str, split_chars: int) -> list[str]:
    """The message, then (if longer than `split_chars`) its sentences and each two neighbouring sentences."""
    sentences = [s for s in (x.strip() for x in _SENTENCE_END.split(message.strip())) if s]
    if len(message) <= split_chars or len(sentences) < 2:
        return [message]
    pairs = [f"{a} {b}" for a, b in zip(sentences, sentences[1:])] if len(sentences) > 2 else []
    return [message, *sentences, *pairs]


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

    def __init__(self, settings: EmbeddingWatchdogSettings, cache_dir: str, classifier: IntentClassifier | None = None,
                 **_):
        self.settings = settings
        self.classifier = classifier or train_default(settings, cache_dir)

    def scores(self, message: str) -> list[tuple[str, float]]:
        """(piece, P(forget request)) for every piece of the message (`pieces`), the whole message first."""
        parts = pieces(message, self.settings.split_chars)
        return list(zip(parts, map(float, self.classifier.predict_proba(parts))))

    def score(self, message: str) -> float:
        return max(p for _, p in self.scores(message))

    def detect(self, message: str, history: Sequence[Turn]) -> ForgetRequest | None:
        scored = self.scores(message)
        if max(q for _, q in scored) < self.settings.threshold:
            return None
        return self.what(message, history, scored)

    def what(self, message: str, history: Sequence[Turn],
             scored: list[tuple[str, float]] | None = None) -> ForgetRequest:
        """What `message` asks to forget, read from its best-scoring sentence (or pair of sentences): in a long
        message the whole text names people and things that have nothing to do with the request."""
        scored = scored or self.scores(message)
        p = max(q for _, q in scored)
        ranked = [piece for piece, q in sorted(scored[1:], key=lambda x: (-x[1], len(x[0])))
                  if q >= min(p, self.settings.threshold)]
        requests = [extract(piece, history) for piece in [*ranked, message]]
        request = next((r for r in requests if r.kind != "unclear"), requests[0])
        if request.message != message:
            request.notes.append(f"extracted from the sentence {request.message!r}")
            request.message = message
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
