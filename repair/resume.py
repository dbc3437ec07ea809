"""Resume a grid: a job whose folder already holds a complete results.json of the same config is skipped.

Re-running a sweep with the same `hydra.sweep.dir` lands every job in the folder it had before, so a grid that
was interrupted (a crash, a cancelled SLURM job, Ctrl-C) finishes by running the same command again. Results of a
different config in that folder (the grid changed) are not trusted: the job runs again and overwrites them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from repair.settings import plain

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("method", "task", "patient", "seed", "metrics", "runtime_s", "config")
# where and how a job executes, not what it measures: a results.json that differs only here still counts
EXECUTION_KEYS = ("cache_dir", "threads", "resume", "logger")


def missing_keys(results: dict[str, Any]) -> list[str]:
    """What a results.json lacks to count as complete (empty when complete)."""
    missing = [k for k in REQUIRED_KEYS if k not in results]
    metrics = results.get("metrics")
    missing += [f"metrics.{stage}" for stage in ("before", "after")
                if stage not in (metrics if isinstance(metrics, dict) else {})]
    return missing


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {json.dumps(value, default=str)[:40]}"


def _is_number(value: Any) -> bool:
    """A metric or timing value: int or float, not bool (NaN: not measured; Inf: a perplexity past float range)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def invalid_fields(results: dict[str, Any]) -> list[str]:
    """Fields a results.json holds with the wrong type, each as 'field (what it is, what it must be)'; empty when
    every present field keeps the contract (README "results.json"): method/task/patient strings, seed an int,
    metrics.before/after and runtime_s objects of numbers (int/float; NaN and Inf included), config an object."""
    bad = []
    for key in ("method", "task", "patient"):
        if key in results and not isinstance(results[key], str):
            bad.append(f"{key} ({_kind(results[key])}, expected a string)")
    if "seed" in results and not (isinstance(results["seed"], int) and not isinstance(results["seed"], bool)):
        bad.append(f"seed ({_kind(results['seed'])}, expected an integer)")
    if "config" in results and not isinstance(results["config"], dict):
        bad.append(f"config ({_kind(results['config'])}, expected an object)")
    metrics = results.get("metrics")
    if "metrics" in results and not isinstance(metrics, dict):
        bad.append(f"metrics ({_kind(metrics)}, expected an object with before and after)")
    sections = [(f"metrics.{stage}", metrics[stage]) for stage in ("before", "after")
                if isinstance(metrics, dict) and stage in metrics]
    sections += [("runtime_s", results["runtime_s"])] if "runtime_s" in results else []
    for name, section in sections:
        if not isinstance(section, dict):
            bad.append(f"{name} ({_kind(section)}, expected an object of numbers)")
            continue
        bad += [f"{name}.{k} ({_kind(v)}, expected a number)"
                for k, v in section.items() if not _is_number(v)]
    return bad


def problems(results: Any) -> str | None:
    """Why a parsed results.json does not count as complete (None when it does): what it lacks, what is invalid."""
    if not isinstance(results, dict):
        return "not a JSON object"
    missing, bad = missing_keys(results), invalid_fields(results)
    parts = ([f"no {', '.join(missing)}"] if missing else []) + ([f"invalid {'; '.join(bad)}"] if bad else [])
    return "; ".join(parts) or None


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    plain = json.loads(json.dumps(config, default=str))  # the types results.json holds
    return {k: v for k, v in plain.items() if k not in EXECUTION_KEYS}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def completed_results(out_dir: str | Path, cfg) -> dict[str, Any] | None:
    """The results.json in `out_dir` if it is complete and was written by this config; None means: run the job."""
    path = Path(out_dir) / "results.json"
    if not path.exists():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("resume: %s is unreadable (%s); running the job again", path, err)
        return None
    problem = problems(results)
    if problem:
        log.warning("resume: %s is incomplete (%s); running the job again", path, problem)
        return None
    current = plain(cfg)
    changed = _differences(_comparable(results["config"]), _comparable(current))
    if changed:
        log.warning("resume: %s holds results of another config (%s differ); running the job again", path,
                    ", ".join(changed[:5]) + (" …" if len(changed) > 5 else ""))
        return None
    return results
