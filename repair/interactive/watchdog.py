"""The watchdog reads every user message first: is it a request to forget something, and what?

`embedding` (offline default): the intent classifier (repair/interactive/classifier.py) decides, rules extract what.
`llm`: a chat model (prompt in config) answers in JSON; what it extracts is still checked by the scope guard.
"""
from __future__ import annotations

import logging
from typing import Protocol, Sequence

from omegaconf import DictConfig, OmegaConf

from repair.interactive.classifier import ClassifierConfig, train_default
from repair.interactive.extract import KINDS, ForgetRequest, Turn, extract
from repair.interactive.llm import ChatModel, ask_json, build_chat_model
from repair.patient import Patient
from repair.registry import Registry

log = logging.getLogger(__name__)
WATCHDOGS: Registry = Registry("watchdog")


class Watchdog(Protocol):
    name: str

    def detect(self, message: str, history: Sequence[Turn]) -> ForgetRequest | None:
        """A ForgetRequest if `message` asks to forget something, else None."""


@WATCHDOGS.register("embedding")
class EmbeddingWatchdog:
    name = "embedding"

    def __init__(self, cfg: dict, cache_dir: str, **_):
        fields = {k: cfg[k] for k in ("embedding", "C", "cue_weight", "threshold", "device") if k in cfg}
        if "ngrams" in cfg:
            fields["ngrams"] = tuple(cfg["ngrams"])
        self.cfg = ClassifierConfig(**fields)
        if not 0 < self.cfg.threshold < 1:
            raise ValueError(f"watchdog.threshold must be in (0, 1), got {self.cfg.threshold}")
        self.classifier = train_default(self.cfg, cache_dir)

    def score(self, message: str) -> float:
        return float(self.classifier.predict_proba([message])[0])

    def detect(self, message: str, history: Sequence[Turn]) -> ForgetRequest | None:
        p = self.score(message)
        if p < self.cfg.threshold:
            return None
        request = extract(message, history)
        request.score, request.backend = p, self.name
        return request


@WATCHDOGS.register("llm")
class LLMWatchdog:
    """Asks a chat model; a reply that is not the JSON asked for counts as 'no request' and is logged."""

    name = "llm"

    def __init__(self, cfg: dict, cache_dir: str, patient: Patient | None = None, chat_model: ChatModel | None = None):
        self.cfg = cfg
        for key in ("system", "prompt"):
            if not cfg.get(key):
                raise ValueError(f"watchdog=llm needs watchdog.{key} (the prompt text)")
        self.model = chat_model or build_chat_model(cfg.get("model"), patient, cache_dir,
                                                    int(cfg.get("max_new_tokens", 128)))

    def detect(self, message: str, history: Sequence[Turn]) -> ForgetRequest | None:
        last = history[-1] if history else Turn("(none)", "(none)")
        prompt = self.cfg["prompt"].format(message=message, last_user=last.user, last_answer=last.patient)
        try:
            data, reply = ask_json(self.model, self.cfg["system"], prompt)
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
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return WATCHDOGS.get(cfg.get("name", "<missing>"))(cfg, cache_dir=cache_dir, patient=patient,
                                                      chat_model=chat_model)
