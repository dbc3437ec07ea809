"""Attacks that try to bring forgotten knowledge back (the `eval.attacks` config group).

Unlearning that only hides knowledge from the plain question can leak it through other prompts, through its
probabilities, through its hidden states, or after a little fine-tuning. Each attack is one module that registers a
class here (`@register_attack("name")`) with its settings as a dataclass (`Settings`, every one with the shared
`seed`; their values live in conf/eval/attacks/all.yaml), built as `cls(settings)`, and `run(ctx) → dict`.
`eval.attacks.run` lists the attacks a run performs, and the runner stores what they return under `robustness` in
results.json. Attacks that edit the patient restore it before they return, so nothing they do reaches a later
measurement.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Sequence

from omegaconf import DictConfig

from repair.patches import Patch
from repair.patient import Patient
from repair.registry import Registry, import_package
from repair.settings import build, plain
from repair.tasks import Task

log = logging.getLogger(__name__)

ATTACKS: Registry = Registry("attack")


@dataclass
class AttackContext:
    """What an attack may look at: the unlearned patient, the task, the method, how the run evaluates (the `eval`
    section as a plain dict), the pre-unlearning metrics and per-sample records (references for recovery), and the
    applied patch of a reversible edit (`Unlearned.patch`; None for an edit trained into the weights)."""

    patient: Patient
    task: Task
    method: Any
    eval_cfg: dict
    before: dict[str, float] | None = None
    before_records: list[dict] = field(default_factory=list)
    seed: int = 0
    patch: Patch | None = None


class Attack(Protocol):
    name: str
    Settings: ClassVar[type]

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        """Measure how much forgotten knowledge the attack recovers; leave the patient as it was."""


def register_attack(name: str):
    return ATTACKS.register(name)


def load_builtin() -> Registry:
    """The registry with every attack module of this package imported (a new attack is one file here)."""
    import_package("repair.attacks")
    return ATTACKS


def attack_settings(name: str, cfg: DictConfig | dict) -> Any:
    """Attack `name`'s Settings from its section `cfg.<name>` of the `eval.attacks` config `cfg`, with the shared
    seed (a section may set its own)."""
    cfg = plain(cfg)
    cls = load_builtin().get(name)
    section = cfg.get(name)
    section = {} if section is None else section  # an attack without settings (reversion: {})
    if not isinstance(section, dict):
        raise ValueError(f"eval.attacks.{name} must be a mapping of settings, got {section!r}")
    if "seed" in cfg:
        section = {"seed": cfg["seed"]} | section
    return build(cls.Settings, section, f"eval.attacks.{name}")


def build_attack(name: str, cfg: DictConfig | dict) -> Attack:
    """Attack `name` built from its section of the `eval.attacks` config `cfg` (see `attack_settings`)."""
    return load_builtin().get(name)(attack_settings(name, cfg))


def build_attacks(cfg: DictConfig | dict | None) -> list[Attack]:
    """The attacks named in `cfg.run`, each built from its own section `cfg.<name>`. Every section is checked, run or
    not, so a misspelled or bad setting fails now, not on the day its attack is run."""
    cfg = plain(cfg)
    valid = ["run", "seed", *load_builtin().names()]
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ValueError(f"eval.attacks has unknown setting(s) {unknown}; valid: {', '.join(valid)}")
    names = cfg.get("run") or []
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"eval.attacks.run must be a list of attack names, got {names!r}; "
                         f"valid names: {', '.join(ATTACKS.names())}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"eval.attacks.run names {duplicates} more than once")
    attacks = [build_attack(name, cfg) for name in names]
    for name in ATTACKS.names():  # the other sections are checked too, though not run
        if name in cfg and name not in names:
            attack_settings(name, cfg)
    return attacks


def run_attacks(patient: Patient, task: Task, method: Any, attacks: Sequence[Attack] | DictConfig | dict | None,
                eval_cfg: DictConfig | dict, before: dict[str, float] | None = None,
                before_records: list[dict] | None = None, seed: int = 0, patch: Patch | None = None,
                ) -> dict[str, dict]:
    """Run each attack on the unlearned patient; `{attack name: result}` with each attack's wall time. `patch` is
    the applied patch of a reversible edit (`Unlearned.patch`), which the reversion check takes off and puts back."""
    if attacks is None or isinstance(attacks, (dict, DictConfig)):
        attacks = build_attacks(attacks)
    ctx = AttackContext(patient, task, method, plain(eval_cfg), before, list(before_records or []), seed, patch)
    out: dict[str, dict] = {}
    for attack in attacks:
        t0 = time.perf_counter()
        result = attack.run(ctx)
        result["seconds"] = time.perf_counter() - t0
        out[attack.name] = result
        log.info("attack %s (%.1f s): %s", attack.name, result["seconds"], result.get("summary", result))
    return out
