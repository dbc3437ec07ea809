"""Read every run below a folder into one pandas table (one row per run, metrics and config flattened).

`load_results` gives the completed runs; `load_runs` adds the runs a sweep asked for that did not complete — a job
folder without a complete results.json is `failed`, a job named by a sweep's multirun.yaml with no folder at all is
`missing` — so that tables can show them as gaps instead of silently dropping them.
"""
from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from omegaconf import OmegaConf

from repair.resume import problems

log = logging.getLogger(__name__)

CONF = Path(__file__).resolve().parents[1] / "conf"
# keys that name a job inside a grid; every other swept key (method.rank, ...) is an ablation variable
IDENTITY_KEYS = ("method", "task", "seed", "patient")
GROUP_KEYS = ("patient", "method", "task", "eval", "logger", "implant")  # config groups: swept by option name


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}; lists stay whole (as their JSON text) so every value fits one cell."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out |= flatten(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: json.dumps(data) if isinstance(data, (list, tuple)) else data}


def _row(res: dict[str, Any], path: Path) -> dict[str, Any]:
    row = {k: res.get(k) for k in ("method", "task", "patient", "seed")}
    config = res.get("config") or {}
    row["oracle"] = bool((config.get("implant") or {}).get("oracle", False))
    for stage, metrics in (res.get("metrics") or {}).items():
        row |= {f"{stage}/{k}": v for k, v in metrics.items()}
    row |= {f"runtime_s/{k}": v for k, v in (res.get("runtime_s") or {}).items()}
    implant = res.get("implant") or {}
    row |= {"implant/cached": implant.get("cached"), "implant/ppl_before": implant.get("ppl_before"),
            "implant/ppl_after": implant.get("ppl_after"), "implant/train_seconds": implant.get("train_seconds"),
            "peak_rss_mb": res.get("peak_rss_mb"), "path": str(path)}
    unlearn = res.get("unlearn") or {}
    if isinstance(unlearn.get("layers"), list):  # what STAMP really edited (num_layers may exceed the depth)
        row["unlearn/num_layers"] = len(unlearn["layers"])
    if res.get("sequence"):
        row["sequence"] = json.dumps(res["sequence"], default=str)
    row |= {f"cfg/{k}": v for k, v in flatten(config).items()}
    return row


def load_results(root: str | Path) -> pd.DataFrame:
    """Every complete results.json below `root`, one row each."""
    runs = load_runs(root, expected=False)
    return runs[runs["status"] == "ok"].drop(columns="status").reset_index(drop=True) if len(runs) else runs


def _job_config(job_dir: Path) -> dict[str, Any]:
    """The config a Hydra job was started with (.hydra/config.yaml), resolved where possible."""
    conf = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    try:
        return OmegaConf.to_container(conf, resolve=True)
    except Exception:  # an interpolation that only resolves inside the job (an env var, a custom resolver)
        return OmegaConf.to_container(conf, resolve=False)


def _gap_row(config: dict[str, Any], status: str, path: str, reason: str) -> dict[str, Any]:
    def name(group: str) -> Any:
        return (config.get(group) or {}).get("name")

    row: dict[str, Any] = {"method": name("method"), "task": name("task"), "patient": name("patient"),
                           "seed": config.get("seed"),
                           "oracle": bool((config.get("implant") or {}).get("oracle", False)), "path": path,
                           "status": status, "reason": reason}
    return row | {f"cfg/{k}": v for k, v in flatten(config).items()}


class GroupOptions:
    """What Hydra's sweeper asks its config loader to expand a `glob(...)` sweep of a config group (e.g.
    `method: glob(*,exclude=none)`): the group's options, the YAML files in the config folder (not subfolders)."""

    def __init__(self, conf_dir: Path):
        self.conf_dir = conf_dir

    def get_group_options(self, group_name: str, *args: Any, **kwargs: Any) -> list[str]:
        return sorted(p.stem for p in (self.conf_dir / group_name).glob("*.yaml"))


def sweep_conf_dir(hydra: Any) -> Path:
    """The config folder a sweep was composed from (multirun.yaml's main config source), else this checkout's."""
    for source in (hydra.get("runtime") or {}).get("config_sources") or []:
        if source.get("provider") == "main" and source.get("schema") == "file" and Path(source["path"]).is_dir():
            return Path(source["path"])
    return CONF


def sweep_grid(multirun_yaml: str | Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(the sweep's base config, one {swept key: value} per job) from a sweep folder's multirun.yaml."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    conf = OmegaConf.load(multirun_yaml)
    hydra = conf.get("hydra") or {}
    params = (hydra.get("sweeper") or {}).get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list((hydra.get("overrides") or {}).get("task") or [])
    swept: dict[str, list[str]] = {}
    parser = OverridesParser.create(config_loader=GroupOptions(sweep_conf_dir(hydra)))
    for override in parser.parse_overrides(overrides):  # later ones win, as in Hydra's sweeper
        if override.is_sweep_override():
            swept[override.key_or_group] = [str(v) for v in override.sweep_string_iterator()]
        else:  # a single value on the command line replaces a recipe's list
            swept.pop(override.key_or_group, None)
    base = OmegaConf.to_container(OmegaConf.masked_copy(conf, [k for k in conf if k != "hydra"]), resolve=False)
    jobs = [dict(zip(swept, combo)) for combo in itertools.product(*swept.values())]
    return base, jobs


def _normal(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value).lower()


def _value(config_flat: dict[str, Any], key: str) -> Any:
    return config_flat.get(f"{key}.name") if key in GROUP_KEYS else config_flat.get(key)


def _matches(config_flat: dict[str, Any], job: dict[str, str]) -> bool:
    return all(_normal(_value(config_flat, k)) == _normal(v) for k, v in job.items())


def load_runs(root: str | Path, expected: bool = True) -> pd.DataFrame:
    """Every run below `root` with a `status`: ok (complete results.json), failed (a job folder without one) or,
    with `expected`, missing (a job a multirun.yaml below `root` names that has no folder)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such results folder: {root}")
    rows: list[dict[str, Any]] = []
    job_dirs = {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    job_dirs |= {p.parent for p in root.rglob("results.json")}
    for job_dir in sorted(job_dirs):
        path = job_dir / "results.json"
        reason = ""
        if path.exists():
            try:
                res = json.loads(path.read_text())
                problem = problems(res)
                if not problem:
                    rows.append(_row(res, job_dir) | {"status": "ok"})
                    continue
                reason = f"incomplete results.json ({problem})"
            except json.JSONDecodeError as err:
                reason = f"unreadable results.json ({err})"
            log.warning("not counting %s as a completed run: %s", path, reason)
        else:
            reason = "no results.json (the job failed or is still running)"
        if not (job_dir / ".hydra" / "config.yaml").exists():
            log.warning("skipping %s: %s and no .hydra/config.yaml to say which run it was", job_dir, reason)
            continue
        rows.append(_gap_row(_job_config(job_dir), "failed", str(job_dir), reason))
    if expected:
        rows += _missing_rows(root, rows)
    return pd.DataFrame(rows)


def shown_path(path: str | Path, root: str | Path) -> str:
    """`path` as generated docs show it: relative to the sweep folder `root` (never a machine's absolute path)."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:  # not below root
        return Path(path).name


def sweep_recipe(root: str | Path, groups: Iterable[Any] | None = None) -> str | None:
    """The recipe a sweep folder ran: the `group` of its multirun.yaml, else of its runs' configs (`groups`, or read
    from every results.json below `root`), else the folder layout `outputs/sweeps/<recipe>/<patient>`."""
    root = Path(root)
    for sweep_file in sorted(root.rglob("multirun.yaml")):
        group = OmegaConf.load(sweep_file).get("group")
        if isinstance(group, str):
            return group
    if groups is None:
        groups = []
        for path in sorted(root.rglob("results.json")):
            try:
                groups.append(((json.loads(path.read_text()) or {}).get("config") or {}).get("group"))
            except (json.JSONDecodeError, AttributeError):
                continue
    named = sorted({g for g in groups if isinstance(g, str) and g})
    if named:
        return "+".join(named)
    parts = root.resolve().parts
    below = [i + 1 for i, part in enumerate(parts[:-1]) if part == "sweeps"]
    return parts[below[-1]] if below else None


def describe_sweep(root: str | Path, patients: Iterable[Any], runs: int, groups: Iterable[Any] | None = None,
                   gaps: str = "") -> str:
    """What generated docs say a table was made from, e.g. 'sweep: table2 on smollm2_135m, 30 runs': the recipe
    and the patients, never the folder (a temporary folder or another machine's path means nothing to a reader)."""
    names = sorted({p for p in patients if isinstance(p, str) and p})
    return (f"sweep: {sweep_recipe(root, groups) or 'no recipe'} on {', '.join(names) or 'unknown patient'}, "
            f"{runs} run{'s' if runs != 1 else ''}{gaps}")


def _owner(job_dir: Path, sweeps: list[Path]) -> Path | None:
    """The sweep folder a job belongs to: the nearest folder above it that holds a multirun.yaml."""
    for parent in job_dir.parents:
        if parent in sweeps:
            return parent
    return None


def _missing_rows(root: Path, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    sweep_files = sorted(root.rglob("multirun.yaml"))
    sweeps = [f.parent for f in sweep_files]
    owned: dict[Path | None, list[dict[str, Any]]] = {}
    for r in rows:
        flat = {k[4:]: v for k, v in r.items() if k.startswith("cfg/")}
        owned.setdefault(_owner(Path(r["path"]), sweeps), []).append(flat)
    out = []
    for sweep_file in sweep_files:
        base, jobs = sweep_grid(sweep_file)
        base_flat = flatten(base)
        seen = owned.get(sweep_file.parent, [])
        for job in jobs:
            if any(_matches(flat, job) for flat in seen):
                continue
            flat = dict(base_flat)
            for key, value in job.items():
                flat[f"{key}.name" if key in GROUP_KEYS else key] = value
            config: dict[str, Any] = {}
            for key, value in flat.items():  # unflatten enough for _gap_row
                node = config
                *parents, leaf = key.split(".")
                for p in parents:
                    node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
                node[leaf] = value
            if "seed" in job:
                config["seed"] = int(float(job["seed"]))
            desc = " ".join(f"{k}={v}" for k, v in job.items())
            out.append(_gap_row(config, "missing", str(sweep_file.parent), f"no job folder for {desc}"))
    return out
