"""The Method protocol and registry. A method edits the patient and reports what it did; it never evaluates or logs.

Every method is one small file that registers a class here (`@register_method("name", label="Name")`, in the
`baselines` package or a module listed in BUILTIN_MODULES), with its settings as a dataclass (`Settings`), plus one
YAML under `conf/method/` that holds their values. `build_method` checks the config against `Settings` before anything slow runs.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, ClassVar, Protocol

from repair.patches import Patch
from repair.patient import Patient
from repair.registry import Registry, import_package
from repair.settings import build, plain
from repair.tasks import QA, Task

METHODS: Registry = Registry("method")
# modules whose import registers the built-in methods, in the paper's row order
BUILTIN_MODULES = ("repair.methods", "baselines.ga", "baselines.npo", "baselines.rmu", "baselines.flat", "baselines.wga",
                   "baselines.asu", "repair.stamp")


@dataclasses.dataclass
class Unlearned:
    """What one unlearning request returns: the report (results.json `unlearn`) and, for a reversible closed-form
    edit, the applied `Patch` (None for an edit trained into the weights)."""

    report: dict[str, Any]
    patch: Patch | None = None


@dataclasses.dataclass
class MethodSettings:
    """Settings every method has."""

    name: str


class Method(Protocol):
    name: str
    Settings: ClassVar[type]

    def prepare(self, task: Task, session: dict | None = None) -> None:
        """Take task-level references before the first request (e.g. STAMP's refused subjects). A chat builds a
        method per request and passes the same `session` dict each time: state worth keeping across its requests
        (STAMP's key cache) lives there."""

    def unlearn(self, patient: Patient, forget: list[QA], retain_buffer: list[QA]) -> Unlearned:
        """Edit `patient` in place so it forgets `forget` while keeping `retain_buffer`."""


class MethodBase:
    """The protocol's defaults: settings kept as `self.settings`, nothing task-level to prepare."""

    name: ClassVar[str]
    Settings: ClassVar[type] = MethodSettings

    def __init__(self, settings):
        self.settings = settings

    def prepare(self, task: Task, session: dict | None = None) -> None:
        return None


def register_method(name: str, label: str | None = None):
    """Register a method class; `label` is its row name in tables (e.g. "STAMP-LR")."""
    return METHODS.register(name, label)


def load_builtin() -> Registry:
    """The registry with the built-in methods, and every module of the `baselines` package: a new training
    baseline is one file there plus one YAML, nothing to list."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    import_package("baselines")
    return METHODS


@register_method("none", label="Base")
class NoUnlearning(MethodBase):
    """The Base reference: the implanted patient, untouched."""

    name = "none"

    def unlearn(self, patient: Patient, forget: list[QA], retain_buffer: list[QA]) -> Unlearned:
        return Unlearned({"changed": False})


def build_method(cfg) -> Method:
    """The method named by `cfg.name`, with its settings checked (unknown, missing or ill-typed keys fail here)."""
    values = plain(cfg)
    cls = load_builtin().get(values.get("name", "<missing>"))
    return cls(build(cls.Settings, values, "method"))
