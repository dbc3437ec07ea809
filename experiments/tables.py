"""The paper's Table 2 layout from a sweep folder: methods × tasks, mean ± std over seeds, best per column marked.

    python -m experiments.tables outputs/sweeps/table2/smollm2_135m --out docs/results

writes `<name>.md`, `<name>.tex` and `<name>.csv` (the CSV is tidy and numeric: one row per method, task and
metric with mean, std and run counts) and logs the table to W&B (offline unless `--wandb-mode online`). A sweep
whose grid varies more than method / task / seed (an ablation: `method.rank`, `task.retain_buffer_ratio`, ...)
gets one row per value of those keys (`--by` to choose them). Failed or missing runs are never dropped: their
cells say so and a warning names each one.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from experiments.collect import IDENTITY_KEYS, describe_sweep, load_runs, shown_path, sweep_grid
from repair.io import atomic_path
from repair.metrics import METRICS, Metric, registered
from repair.registry import Registry

log = logging.getLogger(__name__)

ORACLE = "Oracle"  # the reference row of a patient never taught the forget set (implant.oracle=true, method none)
# modules whose import registers the built-in tasks, in the order the tables show them (as repair.tasks.build_task)
TASK_MODULES = ("repair.tasks.harmful", "repair.tasks.misinformation", "repair.tasks.pii", "repair.tasks.real")


def in_module_order(registry: Registry, modules: Sequence[str]) -> list[str]:
    """A registry's names ordered by the module that registered each (its place in `modules`), then by
    registration: the order `modules` are listed in, whichever of them another import loaded first."""
    names = registry.in_order()

    def place(name: str) -> int:
        module = getattr(registry.get(name), "__module__", "")
        return next((i for i, m in enumerate(modules) if module == m or module.startswith(m + ".")), len(modules))

    return sorted(names, key=lambda name: (place(name), names.index(name)))


def row_order() -> list[str]:
    """Row labels in the paper's order: the methods as registered (repair.methods), the Oracle right after Base."""
    from repair.methods import BUILTIN_MODULES, load_builtin

    methods = load_builtin()
    base = methods.label("none")
    labels = [methods.label(name) for name in in_module_order(methods, BUILTIN_MODULES)]
    return [label for row in labels for label in ((row, ORACLE) if row == base else (row,))]


def references() -> set[str]:
    """Rows that are references, not unlearning methods: shown, never ranked."""
    from repair.methods import load_builtin

    return {load_builtin().label("none"), ORACLE}


def task_order() -> list[str]:
    """Tasks in registration order (repair.tasks): harmful, misinformation, pii, then the real-data tasks."""
    from repair.tasks import TASKS

    for module in TASK_MODULES:
        importlib.import_module(module)
    return in_module_order(TASKS, TASK_MODULES)


def table_metrics() -> list[Metric]:
    """The registered metrics that are table columns (repair.metrics), in registration order."""
    return [m for m in registered() if m.table]


def method_label(method: Any, oracle: bool) -> str:
    from repair.methods import load_builtin

    name = load_builtin().label(str(method))
    if oracle:
        return ORACLE if method == "none" else f"{name} (oracle)"
    return name


def task_scoring(runs: pd.DataFrame, task: str) -> str:
    """How `task` is scored, read from its completed runs (which scoring's own metrics they hold); with none
    completed, from the task built from its own config (conf/task/<task>.yaml); free text if that fails too."""
    done = runs[(runs["task"] == task) & (runs["status"] == "ok")]
    for metric in table_metrics():
        if metric.scoring and metric.split == "forget" and metric.column in done and done[metric.column].notna().any():
            return metric.scoring
    return _configured_scoring(task) or "rouge"


@functools.lru_cache(maxsize=None)
def _configured_scoring(task: str) -> str | None:
    try:
        from repair.setup import compose
        from repair.tasks import build_task

        return build_task(compose("config", [f"task={task}"]).task, seed=0).scoring
    except Exception as err:  # a real-data task without its data here, or a task this checkout does not know
        log.warning("no completed run of task %r and its config does not build here (%s): showing free-text "
                    "metrics", task, str(err).splitlines()[0])
        return None


def task_metrics(runs: pd.DataFrame, task: str) -> list[str]:
    """The table metrics of the task's scoring (Acc_f / Acc_r for multiple choice, F-RL / R-RL for free text),
    then those of every task (utility, run time), in registration order."""
    scoring = task_scoring(runs, task)
    return [m.name for m in table_metrics() if m.scoring in (None, scoring)]


def ordered(values: Sequence[Any], order: Sequence[Any]) -> list[Any]:
    known = [v for v in order if v in values]
    return known + sorted((v for v in values if v not in order), key=str)


def _sort_key(value: Any) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def ablation_keys(root: str | Path) -> list[str]:
    """Keys a sweep below `root` varies besides method, task and seed (multirun.yaml), e.g. ['method.rank']."""
    keys: list[str] = []
    for sweep_file in sorted(Path(root).rglob("multirun.yaml")):
        _, jobs = sweep_grid(sweep_file)
        for key in (jobs[0] if jobs else {}):
            if key not in IDENTITY_KEYS and key not in keys and len({j[key] for j in jobs}) > 1:
                keys.append(key)
    return keys


def summarize(runs: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (method, *by, task, metric): mean and std over the completed runs, run counts, and status."""
    if runs.empty:
        raise ValueError("no runs to tabulate: the folder holds no results.json, job folder or multirun.yaml")
    runs = runs.copy()
    runs["label"] = [method_label(m, bool(o)) for m, o in zip(runs["method"], runs["oracle"])]
    rows_order = row_order()
    by_cols = [f"cfg/{k}" for k in by]
    for key, col in zip(by, by_cols):
        if col not in runs:
            raise ValueError(f"--by {key!r} is not a config key of these runs; e.g. method.rank, method.num_layers, "
                             "task.retain_buffer_ratio, task.forget_limit")
    tasks = ordered(list(runs["task"].dropna().unique()), task_order())
    rows_keys = runs[["label", *by_cols]].drop_duplicates().itertuples(index=False, name=None)
    rows_keys = sorted(rows_keys, key=lambda r: (rows_order.index(r[0]) if r[0] in rows_order else len(rows_order),
                                                str(r[0]), *(_sort_key(v) for v in r[1:])))
    out = []
    for key in rows_keys:
        mask = runs["label"] == key[0]
        for col, value in zip(by_cols, key[1:]):
            mask &= runs[col].astype(str) == str(value)
        for task in tasks:
            cell = runs[mask & (runs["task"] == task)]
            ok = cell[cell["status"] == "ok"]
            counts = {s: int((cell["status"] == s).sum()) for s in ("ok", "failed", "missing")}
            for name in task_metrics(runs, task):
                metric = METRICS.get(name)
                column = ok[metric.column] if metric.column in ok else pd.Series(dtype=float)
                values = pd.to_numeric(column, errors="coerce").dropna()
                out.append({"method": key[0], **dict(zip(by, key[1:])), "task": task, "metric": name,
                            "mean": values.mean() if len(values) else math.nan,
                            "std": values.std(ddof=1) if len(values) > 1 else math.nan,
                            "n_ok": counts["ok"], "n_failed": counts["failed"], "n_missing": counts["missing"],
                            "n_runs": len(cell)})
    table = pd.DataFrame(out)
    table["best"] = False
    for (task, name), group in table[~table["method"].isin(references())].groupby(["task", "metric"], sort=False):
        metric = METRICS.get(name)
        means = group["mean"].round(metric.digits).dropna()
        if len(means):
            target = means.min() if metric.lower_is_better else means.max()
            table.loc[means[means == target].index, "best"] = True
    return table


def _cell(row: pd.Series, latex: bool) -> str:
    if row["n_ok"] == 0 or math.isnan(row["mean"]):
        gap = "failed" if row["n_failed"] else "missing"
        return f"-- ({gap})" if latex else f"— ({gap})"
    digits = METRICS.get(row["metric"]).digits
    text = f"{row['mean']:.{digits}f}"
    if not math.isnan(row["std"]):
        text += (r" $\pm$ " if latex else " ± ") + f"{row['std']:.{digits}f}"
    if row["best"]:
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    if row["n_ok"] < row["n_runs"]:
        text += f" ({row['n_ok']}/{row['n_runs']})"
    return text


def _wide(table: pd.DataFrame, by: Sequence[str], latex: bool) -> pd.DataFrame:
    """methods (and ablation values) × (task, metric) of cell texts."""
    index_cols = ["method", *by]
    columns: list[tuple[str, str]] = []
    for task in dict.fromkeys(table["task"]):
        for name in dict.fromkeys(table.loc[table["task"] == task, "metric"]):
            columns.append((task, name))
    keys = list(dict.fromkeys(table[index_cols].itertuples(index=False, name=None)))
    cells = {(tuple(r[c] for c in index_cols), r["task"], r["metric"]): _cell(r, latex) for _, r in table.iterrows()}
    data = [[*key, *(cells.get((key, t, m), "-- (missing)" if latex else "— (missing)") for t, m in columns)]
            for key in keys]
    header = [("", c) for c in index_cols] + [(t, METRICS.get(m).latex_header if latex else METRICS.get(m).markdown)
                                              for t, m in columns]
    return pd.DataFrame(data, columns=pd.MultiIndex.from_tuples(header))


def to_markdown(table: pd.DataFrame, by: Sequence[str] = ()) -> str:
    wide = _wide(table, by, latex=False)
    wide.columns = [m if not t else f"{t} {m}" for t, m in wide.columns]
    align = ["left"] * (1 + len(by)) + ["right"] * (wide.shape[1] - 1 - len(by))
    return wide.to_markdown(index=False, disable_numparse=True, colalign=align)


def to_latex(table: pd.DataFrame, by: Sequence[str] = ()) -> str:
    wide = _wide(table, by, latex=True)
    wide.columns = pd.MultiIndex.from_tuples([(t, m.replace("_", r"\_") if not t else m) for t, m in wide.columns])
    fmt = "l" * (1 + len(by)) + "r" * (wide.shape[1] - 1 - len(by))
    return wide.to_latex(index=False, multicolumn=True, multicolumn_format="c", column_format=fmt)


NOTES = ("mean ± std over seeds; (k/n): only k of n runs completed; — (failed) / — (missing): no completed run. "
         "Best unlearning method per column in bold (Base and Oracle are references, not ranked); "
         "↓ lower is better, ↑ higher is better; Time = unlearning wall clock.")


def report_gaps(runs: pd.DataFrame, root: str | Path | None = None) -> list[str]:
    """One warning line per run that did not complete (its folder relative to the sweep folder `root` if given)."""
    lines = []
    for _, r in runs[runs["status"] != "ok"].iterrows():
        where = shown_path(r["path"], root) if root is not None else r["path"]
        lines.append(f"{r['status']}: {method_label(r['method'], bool(r['oracle']))} on {r['task']} seed {r['seed']}"
                     f" — {r.get('reason', '')} ({where})")
    for line in lines:
        log.warning("%s", line)
    return lines


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sweep_name(root: str | Path) -> str:
    """The recipe's `group` (table2, ablation_rank, ...) from the sweep's multirun.yaml, else 'table'."""
    for sweep_file in sorted(Path(root).rglob("multirun.yaml")):
        base, _ = sweep_grid(sweep_file)
        if isinstance(base.get("group"), str):
            return base["group"]
    return "table"


def sweep_header(root: str | Path, runs: pd.DataFrame) -> str:
    """'sweep: table2 on smollm2_135m, 30 runs' (and how many failed or are missing): never the folder's path."""
    counts = runs["status"].value_counts() if len(runs) else pd.Series(dtype=int)
    failed, missing = int(counts.get("failed", 0)), int(counts.get("missing", 0))
    gaps = f", {failed} failed, {missing} missing" if failed or missing else ""
    ok = runs[runs["status"] == "ok"] if len(runs) else runs
    groups = list(ok["cfg/group"]) if "cfg/group" in ok else []
    return describe_sweep(root, runs["patient"] if "patient" in runs else [], len(ok), groups, gaps)


def write_tables(root: str | Path, out: str | Path | None = None, name: str | None = None,
                 by: Sequence[str] | None = None) -> dict[str, Any]:
    """Read the runs below `root`, write `<name>.md/.tex/.csv` into `out` (default `<root>/tables`)."""
    root = Path(root)
    out = Path(out) if out else root / "tables"
    name = name or sweep_name(root)
    runs = load_runs(root)
    by = list(ablation_keys(root) if by is None else by)
    table = summarize(runs, by)
    gaps = report_gaps(runs, root)
    markdown, latex = to_markdown(table, by), to_latex(table, by)
    md_text = f"# {name} — {sweep_header(root, runs)}\n\n{markdown}\n\n{NOTES}\n"
    if gaps:
        md_text += "\nRuns that did not complete:\n\n" + "".join(f"- {g}\n" for g in gaps)
    paths = {"md": out / f"{name}.md", "tex": out / f"{name}.tex", "csv": out / f"{name}.csv"}
    _write_text(paths["md"], md_text)
    _write_text(paths["tex"], latex)
    with atomic_path(paths["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    log.info("wrote %s (%d completed, %d failed, %d missing runs)", ", ".join(map(str, paths.values())),
             int((runs["status"] == "ok").sum()), int((runs["status"] == "failed").sum()),
             int((runs["status"] == "missing").sum()))
    return {"paths": paths, "table": table, "markdown": markdown, "latex": latex, "runs": runs, "by": by,
            "name": name}


def log_to_wandb(result: dict[str, Any], root: str | Path, name: str, project: str = "repair",
                 mode: str | None = None) -> None:
    """The table as a W&B run of its own (job_type table): the displayed cells and the numeric CSV rows."""
    import wandb

    mode = mode or os.environ.get("WANDB_MODE", "offline")
    wide = _wide(result["table"], result["by"], latex=False)
    wide.columns = [m if not t else f"{t} {m}" for t, m in wide.columns]
    run = wandb.init(project=project, name=f"{name}-{Path(root).name}", job_type="table", mode=mode,
                     dir=str(root), config={"sweep_dir": str(root)},  # beside the runs, not in --out (docs/)
                     reinit="finish_previous")
    try:
        run.log({name: wandb.Table(dataframe=wide.astype(str)),
                 f"{name}_numeric": wandb.Table(dataframe=result["table"])})
    finally:
        run.finish()
    log.info("table logged to W&B (%s mode)", mode)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="a sweep folder (or any folder holding results.json files below it)")
    parser.add_argument("--out", help="where the tables go (default: <root>/tables)")
    parser.add_argument("--name", help="file name stem (default: the recipe's group, e.g. table2, else 'table')")
    parser.add_argument("--by", nargs="*", default=None,
                        help="config keys that make extra rows (default: what the sweep varies besides method, "
                             "task and seed; give none for the plain methods × tasks table)")
    parser.add_argument("--wandb-mode", choices=["offline", "online", "disabled"], default=None,
                        help="W&B logging of the table (default: $WANDB_MODE, else offline)")
    parser.add_argument("--project", default="repair", help="W&B project")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = write_tables(args.root, args.out, args.name, args.by)
    sys.stdout.write(result["markdown"] + "\n")  # the table is the command's output, not a log message
    if (args.wandb_mode or os.environ.get("WANDB_MODE")) != "disabled":
        log_to_wandb(result, args.root, result["name"], args.project, args.wandb_mode)


if __name__ == "__main__":
    main()
