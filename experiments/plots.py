"""Figures from a sweep folder: forget-vs-retain trade-off, run time, and ablation curves; PNG and PDF.

    python -m experiments.plots outputs/sweeps/table2/smollm2_135m --out docs/results

Each figure is drawn only when the runs hold what it needs (a rank curve needs runs that differ in `method.rank`);
the log says which were skipped and why. Means over seeds, error bars = std.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.collect import load_results  # noqa: E402
from experiments.tables import method_label, ordered, references, row_order, task_order  # noqa: E402
from repair.io import atomic_path  # noqa: E402
from repair.metrics import METRICS, registered, scored_metric  # noqa: E402

log = logging.getLogger(__name__)

TIME, PPL = METRICS.get("time").column, METRICS.get("ppl").column  # run time and utility columns of the runs frame
# ablation variables: config column, axis name, whether to use a log2 axis
ABLATIONS = {"rank": ("cfg/method.rank", "STAMP-LR rank r", True),
             "layers": ("unlearn/num_layers", "edited layers", True),
             "retain_buffer": ("cfg/task.retain_buffer_ratio", "retain buffer (share of retain subjects)", False),
             "forget_size": ("cfg/task.forget_limit", "forget items requested", True)}


def _prepare(runs: pd.DataFrame) -> pd.DataFrame:
    runs = runs.copy()
    runs["label"] = [method_label(m, bool(o)) for m, o in zip(runs["method"], runs["oracle"])]
    return runs


def scores(scoring: str) -> tuple[str, str, str, str]:
    """(forget column, retain column, forget axis name, retain axis name) of a scoring's own metrics."""
    forget, retain = scored_metric(scoring, "forget"), scored_metric(scoring, "retain")
    return forget.column, retain.column, forget.axis, retain.axis


def _scores(runs: pd.DataFrame, task: str) -> tuple[str, str, str, str] | None:
    """The task's forget and retain columns: those of the first scoring (registration order) its runs measured."""
    sub = runs[runs["task"] == task]
    for metric in registered():
        if metric.table and metric.scoring and metric.split == "forget" and metric.column in sub \
                and sub[metric.column].notna().any():
            return scores(metric.scoring)
    return None


def save_figure(fig, out: Path, name: str) -> list[Path]:
    """`out/name.png` and `.pdf`, each written atomically; closes the figure."""
    paths = []
    for ext in ("png", "pdf"):
        path = out / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _tasks(runs: pd.DataFrame) -> list[str]:
    return ordered(list(runs["task"].dropna().unique()), task_order())


def tradeoff(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Forget (x, lower is better) vs retain (y, higher is better): one point per method and task."""
    tasks = [t for t in _tasks(runs) if _scores(runs, t)]
    if not tasks:
        return []
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        f_col, r_col, f_name, r_name = _scores(runs, task)
        stats = runs[runs["task"] == task].groupby("label")[[f_col, r_col]].agg(["mean", "std"])
        for label in ordered(list(stats.index), row_order()):
            row = stats.loc[label]
            ref = label in references()
            ax.errorbar(row[(f_col, "mean")], row[(r_col, "mean")], xerr=row[(f_col, "std")],
                        yerr=row[(r_col, "std")], fmt="s" if ref else "o", color="grey" if ref else None,
                        capsize=2, label=label)
            ax.annotate(label, (row[(f_col, "mean")], row[(r_col, "mean")]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        ax.set(title=task, xlabel=f_name, ylabel=r_name)
        ax.grid(alpha=0.3)
    fig.suptitle("forget vs retain after unlearning (best: top left → low forget, high retain)", fontsize=9)
    return save_figure(fig, out, "tradeoff")


def runtime_bars(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Unlearning wall clock per method, one bar per task."""
    runs = runs[~runs["label"].isin(references())]
    if runs.empty or TIME not in runs:
        return []
    stats = runs.groupby(["label", "task"])[TIME].agg(["mean", "std"]).reset_index()
    labels = ordered(list(stats["label"].unique()), row_order())
    tasks = _tasks(runs)
    width = 0.8 / len(tasks)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 3.6))
    for i, task in enumerate(tasks):
        sub = stats[stats["task"] == task].set_index("label").reindex(labels)
        ax.bar([x + i * width for x in range(len(labels))], sub["mean"], width, yerr=sub["std"].fillna(0),
               capsize=2, label=task)
    ax.set_xticks([x + width * (len(tasks) - 1) / 2 for x in range(len(labels))], labels, rotation=30, ha="right")
    ax.set(ylabel="unlearning time (s)", title="run time")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out, "runtime")


def ablation_curve(runs: pd.DataFrame, out: Path, name: str) -> list[Path]:
    """Forget, retain and run time against one ablation variable, a line per method, a column per task."""
    column, xlabel, log2 = ABLATIONS[name]
    if column not in runs:
        return []
    runs = runs[runs[column].notna()].copy()
    runs[column] = pd.to_numeric(runs[column], errors="coerce")
    runs = runs[runs[column].notna()]
    tasks = [t for t in _tasks(runs) if _scores(runs, t) and runs.loc[runs["task"] == t, column].nunique() > 1]
    if not tasks:
        return []
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 6.0), squeeze=False)
    for j, task in enumerate(tasks):
        f_col, r_col, f_name, r_name = _scores(runs, task)
        sub = runs[runs["task"] == task]
        for k, label in enumerate(ordered(list(sub["label"].unique()), row_order())):
            stats = sub[sub["label"] == label].groupby(column)[[f_col, r_col, TIME]].mean().sort_index()
            color = f"C{k}"
            axes[0][j].plot(stats.index, stats[f_col], "o--", color=color, label=f"{label} forget")
            axes[0][j].plot(stats.index, stats[r_col], "o-", color=color, label=f"{label} retain")
            axes[1][j].plot(stats.index, stats[TIME], "o-", color=color, label=label)
        axes[0][j].set(title=task, ylabel=f"{f_name} (dashed) / {r_name} (solid)")
        axes[1][j].set(xlabel=xlabel, ylabel="unlearning time (s)")
        for ax in (axes[0][j], axes[1][j]):
            if log2:
                ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(sub[column].unique()), [f"{v:g}" for v in sorted(sub[column].unique())])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return save_figure(fig, out, f"ablation_{name}")


def sequential_drift(runs: pd.DataFrame, out: Path) -> list[Path]:
    """After each request of a sequential run: forgetting of everything requested so far, retain, utility."""
    if "sequence" not in runs or runs["sequence"].isna().all():
        return []
    rows = []
    for _, r in runs[runs["sequence"].notna()].iterrows():
        before = {c: r[c] for c in runs.columns if c.startswith("before/") and not c.startswith("before/f")}
        rows.append({"label": r["label"], "task": r["task"], "request": 0,  # before any request: the drift's origin
                     **{c.replace("before/", "after/"): v for c, v in before.items()}})
        for step in json.loads(r["sequence"]):
            rows.append({"label": r["label"], "task": r["task"], "request": step["request"],
                         **{f"after/{k}": v for k, v in step["metrics"].items()}})
    steps = pd.DataFrame(rows)
    tasks = [t for t in _tasks(steps) if _scores(steps, t)]
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 6.0), squeeze=False)
    for j, task in enumerate(tasks):
        f_col, r_col, f_name, r_name = _scores(steps, task)
        sub = steps[steps["task"] == task]
        for k, label in enumerate(ordered(list(sub["label"].unique()), row_order())):
            stats = sub[sub["label"] == label].groupby("request").mean(numeric_only=True)
            color = f"C{k}"
            axes[0][j].plot(stats.index, stats[f_col], "o--", color=color, label=f"{label} forget (requested so far)")
            axes[0][j].plot(stats.index, stats[r_col], "o-", color=color, label=f"{label} retain")
            if PPL in stats:
                axes[1][j].plot(stats.index, stats[PPL], "o-", color=color, label=label)
        axes[0][j].set(title=task, ylabel=f"{f_name} (dashed) / {r_name} (solid)")
        axes[1][j].set(xlabel="unlearning requests so far (0: before)", ylabel="utility perplexity ↓")
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xticks(sorted(sub["request"].unique()))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return save_figure(fig, out, "sequential_drift")


def write_plots(root: str | Path, out: str | Path | None = None) -> list[Path]:
    """Every figure the runs below `root` support, as PNG and PDF in `out` (default `<root>/plots`)."""
    root = Path(root)
    out = Path(out) if out else root / "plots"
    runs = load_results(root)
    if runs.empty:
        raise ValueError(f"no completed runs (results.json) below {root}")
    runs = _prepare(runs)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"tradeoff": lambda: tradeoff(runs, out), "runtime": lambda: runtime_bars(runs, out),
               "sequential_drift": lambda: sequential_drift(runs, out)}
    figures |= {f"ablation_{n}": (lambda n=n: ablation_curve(runs, out, n)) for n in ABLATIONS}
    written: list[Path] = []
    for name, draw in figures.items():
        paths = draw()
        if paths:
            written += paths
        else:
            log.info("skipped %s: the runs do not vary what it plots", name)
    log.info("wrote %d figures to %s", len(written) // 2, out)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a sweep folder (or any folder holding results.json files below it)")
    parser.add_argument("--out", help="where the figures go (default: <root>/plots)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write_plots(args.root, args.out)


if __name__ == "__main__":
    main()
