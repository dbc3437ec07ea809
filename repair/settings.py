"""Typed settings at one boundary.

Every configurable part (a method, task, attack, watchdog, surgeon, the implant, the evaluation) declares its
settings as a dataclass, and `build` turns a config section into that dataclass once, where the part is built.
The defaults live in one place: the YAML under `conf/` (documented there, composed by Hydra). The dataclass says
which keys exist, their types and their allowed values (`Literal[...]`), and its `check()` what else must hold. So
an unknown or misspelled key, a missing one, or a value of the wrong type fails at build time with a message that
names the key and what would be valid, never deep inside a run.

Code that builds a part without Hydra composes the YAML first (`repair.setup.compose`): a hand-written dict that
lacks a setting is an error, not a silent fall-back to a second default.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

S = TypeVar("S")


def plain(cfg: Any) -> dict:
    """A config section as a plain dict (interpolations resolved); None is empty."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    raise TypeError(f"expected a mapping of settings, got {type(cfg).__name__}: {cfg!r}")


def keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def build(cls: type[S], cfg: Any, where: str, **given: Any) -> S:
    """`cls` filled from the config section `cfg` (plus `given`), type-checked and `check()`ed.

    `where` names the section in messages, e.g. "method" or "eval.attacks.mia"."""
    values = plain(cfg) | given
    valid = keys(cls)
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"{where} has unknown setting(s) {unknown}; valid: {', '.join(valid)}")
    required = {f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(values))
    if missing:
        raise ValueError(f"{where} lacks setting(s) {missing}; their defaults live in its YAML under conf/ "
                         "(compose it: repair.setup.compose)")
    hints = _hints(cls)
    obj = cls(**{k: coerce(v, hints.get(k, Any), f"{where}.{k}") for k, v in values.items()})
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    return obj


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the annotation `hint` (ints pass as floats); a mismatch names the valid values."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except ValueError as error:
                errors.append(str(error).split(" is invalid; valid: ")[-1])
        raise invalid(where, value, " or ".join(errors + (["null"] if type(None) in args else [])))
    if origin is Literal:
        if value in args:
            return value
        raise invalid(where, value, ", ".join(map(str, args)))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise invalid(where, value, "a list")
        inner = args[0] if args else Any
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise invalid(where, value, "a mapping")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise invalid(where, value, "true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise invalid(where, value, "an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise invalid(where, value, "a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise invalid(where, value, "a string")
    return value


def invalid(where: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"{where} = {value!r} is invalid; valid: {valid}")


def require(condition: bool, where: str, value: Any, valid: str) -> None:
    """For `check()`: fail naming the setting, its value and what would be valid."""
    if not condition:
        raise invalid(where, value, valid)
