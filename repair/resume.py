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

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("method", "task", "patient", "seed", "metrics", "runtime_s", "config")
# where and how a job executes, not what it measures: a results.json that differs only here still counts
EXECUTION_KEYS = ("cache_dir", "threads", "resume", "logger")


def missing_keys(results: dict[str, Any]) -> list[str]:
    """What a results.json lacks to count as complete (empty when complete)."""
    missing = [k for k in REQUIRED_KEYS if k not in results]
    missing += [f"metrics.{stage}" for stage in ("before", "after") if stage not in (results.get("metrics") or {})]
    return missing


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


def completed_results(out_dir: str | Path, cfg: DictConfig | dict) -> dict[str, Any] | None:
    """The results.json in `out_dir` if it is complete and was written by this config; None means: run the job."""
    path = Path(out_dir) / "results.json"
    if not path.exists():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("resume: %s is unreadable (%s); running the job again", path, err)
        return None
    missing = missing_keys(results) if isinstance(results, dict) else ["everything (not a JSON object)"]
    if missing:
        log.warning("resume: %s is incomplete (no %s); running the job again", path, ", ".join(missing))
        return None
    current = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    changed = _differences(_comparable(results["config"]), _comparable(current))
    if changed:
        log.warning("resume: %s holds results of another config (%s differ); running the job again", path,
                    ", ".join(changed[:5]) + (" …" if len(changed) > 5 else ""))
        return None
    return results
