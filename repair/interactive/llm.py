"""Chat models for the `llm` watchdog and surgeon: any causal LM with a chat template, loaded like a patient
(`repair.patient.load`: a local folder, a hub id, the GGUF package), or the chat's own patient. Their prompts live
in config; their answers are parsed as JSON and validated, never executed."""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

from repair.patient import Patient
from repair.settings import plain, require

log = logging.getLogger(__name__)
_LOADED: dict[str, Patient] = {}


class ChatModel(Protocol):
    def __call__(self, system: str, user: str) -> str:
        """The model's reply to one system + user turn."""


class PatientChat:
    """Greedy replies from a loaded causal LM through its chat template."""

    def __init__(self, patient: Patient, max_new_tokens: int):
        self.patient, self.max_new_tokens = patient, max_new_tokens

    @torch.no_grad()
    def __call__(self, system: str, user: str) -> str:
        tok = self.patient.tokenizer
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False).to(self.patient.device)
        out = self.patient.model.generate(**enc, do_sample=False, max_new_tokens=self.max_new_tokens,
                                          pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


MODEL_CHOICES = ("'patient' or a patient config with a 'source' (e.g. {name: big, source: hf, name_or_path: "
                 "/models/llama3-8b-instruct})")


@dataclass
class ChatModelSettings:
    """What the `llm` watchdog and surgeon share: which chat model, how long it may answer, and its prompts."""

    model: str | dict[str, Any]  # 'patient' or a patient config with a `source`
    max_new_tokens: int
    system: str
    prompt: str

    def check_chat(self, section: str) -> None:
        require(self.model == "patient" or (isinstance(self.model, dict) and bool(self.model.get("source"))),
                f"{section}.model", self.model, MODEL_CHOICES)
        require(self.max_new_tokens >= 1, f"{section}.max_new_tokens", self.max_new_tokens, "an integer >= 1")
        for key in ("system", "prompt"):
            require(bool(getattr(self, key).strip()), f"{section}.{key}", getattr(self, key),
                    "the prompt text (non-empty)")


def build_chat_model(spec: Any, patient: Patient | None, cache_dir: str, max_new_tokens: int) -> ChatModel:
    """`spec` is 'patient' (the chat's own patient) or a patient config ({source: hf, name_or_path: ...})."""
    if isinstance(spec, Mapping):
        spec = plain(spec)
    if spec == "patient":
        if patient is None:
            raise ValueError("model: patient needs the chat's patient, and none was given")
        return PatientChat(patient, max_new_tokens)
    if isinstance(spec, dict) and spec.get("source"):
        from repair import patient as patients

        key = json.dumps(spec, sort_keys=True, default=str)
        if key not in _LOADED:  # the watchdog and the surgeon may name the same model: load it once
            _LOADED[key] = patients.load(spec, cache_dir)
        return PatientChat(_LOADED[key], max_new_tokens)
    raise ValueError(f"unknown chat model {spec!r}; valid: {MODEL_CHOICES}")


def first_json_object(text: str) -> dict:
    """The first JSON object in a model's reply (models wrap JSON in prose or code fences)."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{":
            try:
                obj, _ = decoder.raw_decode(text[i:])
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    raise ValueError(f"no JSON object in the model's reply: {text[:200]!r}")


def ask_json(model: Callable[[str, str], str], system: str, user: str) -> tuple[dict, str]:
    reply = model(system, user)
    log.debug("chat model replied: %s", reply)
    return first_json_object(reply), reply
