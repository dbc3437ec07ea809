"""The Method protocol and registry. A method edits the patient and reports what it did; it never evaluates or logs.

Every method is one small file that registers a class here, plus one YAML under `conf/method/`.
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from repair.patient import Patient
from repair.registry import Registry
from repair.tasks import QA

METHODS: Registry = Registry("method")
# modules whose import registers the built-in methods
BUILTIN_MODULES = ("repair.methods", "repair.stamp", "baselines.ga", "baselines.npo", "baselines.rmu", "baselines.flat",
                   "baselines.wga", "baselines.asu")


class Method(Protocol):
    name: str

    def unlearn(self, patient: Patient, forget: list[QA], retain_buffer: list[QA]) -> dict[str, Any]:
        """Edit `patient` in place so it forgets `forget` while keeping `retain_buffer`; return a report."""


def register_method(name: str):
    return METHODS.register(name)


@register_method("none")
class NoUnlearning:
    """The Base reference: the implanted patient, untouched."""

    name = "none"

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def unlearn(self, patient: Patient, forget: list[QA], retain_buffer: list[QA]) -> dict[str, Any]:
        return {"changed": False}


def build_method(cfg: DictConfig | dict) -> Method:
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return METHODS.get(cfg.get("name", "<missing>"))(cfg)
