"""Attacks that try to bring forgotten knowledge back (the `eval.attacks` config group).

Unlearning that only hides knowledge from the plain question can leak it through other prompts, through its
probabilities, through its hidden states, or after a little fine-tuning. Each attack is one module that registers a
class here (`@register_attack("name")`, `__init__(cfg)` validates, `run(ctx) → dict`); `eval.attacks.run` lists the
attacks a run performs, and the runner stores what they return under `robustness` in results.json. Attacks that
edit the patient restore it before they return, so nothing they do reaches a later measurement.
"""
from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from omegaconf import DictConfig, OmegaConf

from repair.patient import Patient
from repair.registry import Registry
from repair.tasks import Task

log = logging.getLogger(__name__)

ATTACKS: Registry = Registry("attack")
# modules whose import registers the built-in attacks
BUILTIN_MODULES = ("repair.attacks.prompting", "repair.attacks.mia", "repair.attacks.probe",
                   "repair.attacks.reversion", "repair.attacks.relearn")


@dataclass
class AttackContext:
    """What an attack may look at: the unlearned patient, the task, the method (for its patch), how the run
    evaluates, and the pre-unlearning metrics and per-sample records (references for recovery)."""

    patient: Patient
    task: Task
    method: Any
    eval_cfg: dict
    before: dict[str, float] | None = None
    before_records: list[dict] = field(default_factory=list)
    seed: int = 0


class Attack(Protocol):
    name: str

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        """Measure how much forgotten knowledge the attack recovers; leave the patient as it was."""


def register_attack(name: str):
    return ATTACKS.register(name)


def _plain(cfg) -> dict:
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_attacks(cfg: DictConfig | dict | None) -> list[Attack]:
    """The attacks named in `cfg.run`, each built from its own section `cfg.<name>` (bad values fail here)."""
    cfg = _plain(cfg)
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    names = cfg.get("run") or []
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"eval.attacks.run must be a list of attack names, got {names!r}; "
                         f"valid names: {', '.join(ATTACKS.names())}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"eval.attacks.run names {duplicates} more than once")
    attacks = []
    for name in names:
        section = cfg.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"eval.attacks.{name} must be a mapping of settings, got {section!r}")
        attacks.append(ATTACKS.get(name)(section | {"seed": section.get("seed", cfg.get("seed", 0))}))
    return attacks


def run_attacks(patient: Patient, task: Task, method: Any, attacks: Sequence[Attack] | DictConfig | dict | None,
                eval_cfg: DictConfig | dict, before: dict[str, float] | None = None,
                before_records: list[dict] | None = None, seed: int = 0) -> dict[str, dict]:
    """Run each attack on the unlearned patient; `{attack name: result}` with each attack's wall time."""
    if attacks is None or isinstance(attacks, (dict, DictConfig)):
        attacks = build_attacks(attacks)
    ctx = AttackContext(patient, task, method, _plain(eval_cfg), before, list(before_records or []), seed)
    out: dict[str, dict] = {}
    for attack in attacks:
        t0 = time.perf_counter()
        result = attack.run(ctx)
        result["seconds"] = time.perf_counter() - t0
        out[attack.name] = result
        log.info("attack %s (%.1f s): %s", attack.name, result["seconds"], result.get("summary", result))
    return out
