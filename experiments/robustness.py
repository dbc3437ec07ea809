"""Robustness table and plots from the `robustness` sections of every results.json below a folder.

    python -m experiments.robustness outputs/sweeps/table2/smollm2_135m --out docs/results

writes `robustness.md` (one table per task: each method's forget score before and after unlearning and under
each attack, membership-inference AUC and PrivLeak, probe accuracy against chance, the reversion check),
`robustness.csv` (one row per run), `robustness.png/.pdf` (forget score under attack, per method) and
`robustness_relearn.png/.pdf` (forget score against relearning steps). Runs made without `eval/attacks=all` are ignored.
PrivLeak is taken from the run when it had `eval.attacks.mia.oracle_auc`, else computed against an
`implant.oracle=true` run of the same task, patient and seed found below the same folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.collect import describe_sweep, shown_path  # noqa: E402
from experiments.plots import save_figure  # noqa: E402
from experiments.tables import method_label, row_order, task_order  # noqa: E402
from repair.attacks.prompting import VARIANTS  # noqa: E402
from repair.io import atomic_path  # noqa: E402
from repair.metrics import METRICS, scored_metric  # noqa: E402
from repair.resume import invalid_fields  # noqa: E402

log = logging.getLogger(__name__)


def _unit(metric: str) -> str:
    """' (%)' after a metric in percent (Acc_f, exact-fact recall), nothing after one in [0, 1] (F-RL)."""
    return " (%)" if metric in METRICS and METRICS.get(metric).unit == "%" else ""


def _forget_metric(after: dict[str, Any]) -> str:
    """The forget score of a run whose attacks name none: its scoring's own (Acc_f where measured, else F-RL)."""
    choice = scored_metric("choice")
    return choice.name if choice.name in after else scored_metric("rouge").name


def _row(res: dict[str, Any], path: Path) -> dict[str, Any]:
    rob = res["robustness"]
    oracle = bool(res.get("config", {}).get("implant", {}).get("oracle", False))
    prompting, relearn = rob.get("prompting") or {}, rob.get("relearn") or {}
    mia, probe, reversion = rob.get("mia") or {}, rob.get("probe") or {}, rob.get("reversion") or {}
    metric = prompting.get("metric") or relearn.get("metric") or _forget_metric(res.get("metrics", {}).get("after", {}))
    row: dict[str, Any] = {"method": res.get("method"), "task": res.get("task"), "patient": res.get("patient"),
                           "seed": res.get("seed"), "oracle": oracle, "label": method_label(res.get("method"), oracle),
                           "metric": metric, "path": str(path.parent)}
    for stage in ("before", "after"):
        row[stage] = res.get("metrics", {}).get(stage, {}).get(metric)
    for variant, summary in (prompting.get("variants") or {}).items():
        row[f"prompt/{variant}"] = summary.get(metric)
    worst = prompting.get("worst") or {}
    row["prompt/worst"] = worst.get(metric)
    row["prompt/worst_variant"] = worst.get("variant") if worst.get(metric) else None  # no variant leaks: none is worst
    curve = relearn.get("curve") or []
    for point in curve:
        row[f"relearn/{point['step']}"] = point.get(metric)
        row[f"relearn_nll/{point['step']}"] = point.get("fact_nll")
        row[f"relearn_holdout_nll/{point['step']}"] = point.get("holdout_fact_nll")
    if curve:
        row["relearn/steps"], row["relearn/final"] = curve[-1]["step"], curve[-1].get(metric)
        row["relearn/fact_nll_start"], row["relearn/fact_nll_final"] = curve[0].get("fact_nll"), curve[-1].get("fact_nll")
        row["relearn/holdout_nll_final"] = curve[-1].get("holdout_fact_nll")
    row["mia/auc"], row["mia/auc_retain"] = mia.get("auc"), mia.get("auc_retain")
    row["mia/privleak"] = mia.get("privleak")
    row["mia/privleak_from"] = "config" if mia.get("privleak") is not None else None
    best = probe.get("best") or {}
    row["probe/accuracy"], row["probe/chance"] = best.get("accuracy"), best.get("chance")
    row["probe/holdout"], row["probe/layer"] = best.get("holdout_accuracy"), best.get("layer")
    lens = [v for v in ((probe.get("lens") or {}).get("layers") or {}).values() if v.get("forget") is not None]
    if lens:  # the layer where the forget facts stand out most above the never-taught holdout
        top = max(lens, key=lambda v: v["forget"] - (v.get("holdout") or 0.0))
        row["probe/lens_forget"], row["probe/lens_holdout"] = top["forget"], top.get("holdout")
    row["reversion/exact"] = reversion.get("exact")
    row["seconds"] = sum(v.get("seconds", 0.0) for v in rob.values() if isinstance(v, dict))
    return row


def load_robustness(root: str | Path) -> pd.DataFrame:
    """One row per run that has a `robustness` section, PrivLeak filled from Oracle runs where possible."""
    rows = []
    for path in sorted(Path(root).rglob("results.json")):
        try:
            res = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            log.warning("skipping unreadable %s: %s", path, err)
            continue
        bad = invalid_fields(res) if isinstance(res, dict) else ["everything (not a JSON object)"]
        if bad:  # what the table reads must keep the results.json contract; a missing section only leaves gaps
            log.warning("skipping %s: invalid %s", path, "; ".join(bad))
            continue
        if res.get("robustness"):
            rows.append(_row(res, path) | {"path": shown_path(path.parent, root)})  # not a machine's absolute path
    runs = pd.DataFrame(rows)
    if runs.empty:
        return runs
    oracles = runs[runs["oracle"] & (runs["method"] == "none")]
    for i, run in runs.iterrows():
        if run["oracle"] or pd.isna(run["mia/auc"]) or pd.notna(run["mia/privleak"]):
            continue
        same = oracles[(oracles["task"] == run["task"]) & (oracles["patient"] == run["patient"])]
        match = same[same["seed"] == run["seed"]]
        if match.empty or pd.isna(match["mia/auc"].iloc[0]):
            continue
        oracle_auc = float(match["mia/auc"].iloc[0])
        runs.at[i, "mia/privleak"] = (run["mia/auc"] - oracle_auc) / oracle_auc
        runs.at[i, "mia/privleak_from"] = "oracle run"
    return runs


def _order(runs: pd.DataFrame, column: str, order: Sequence[str]) -> list[str]:
    values = list(dict.fromkeys(runs[column]))
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


def _fmt(value: Any, metric: str | None = None, digits: int = 3) -> str:
    """`value` with the metric's compact digits (repair.metrics), else `digits`; '–' where there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if metric in METRICS:
        return METRICS.get(metric).brief(value)
    return f"{value:.{digits}f}"


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per task and method; `n` = runs; reversion = share of exact checks."""
    numeric = [c for c in runs.columns if c not in ("method", "task", "patient", "seed", "oracle", "label", "metric",
                                                    "path", "prompt/worst_variant", "mia/privleak_from")]
    frame = runs.copy()
    frame["reversion/exact"] = frame["reversion/exact"].map(lambda v: float(v) if isinstance(v, bool) else math.nan)
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    table = frame.groupby(["task", "label"], sort=False)[numeric].mean()
    table["n"] = frame.groupby(["task", "label"], sort=False).size()
    table["metric"] = frame.groupby(["task", "label"], sort=False)["metric"].first()
    table["worst_variant"] = frame.groupby(["task", "label"], sort=False)["prompt/worst_variant"].agg(
        lambda v: ", ".join(sorted({x for x in v if isinstance(x, str) and x})))  # NaN: no variant leaked
    return table.reset_index()


def to_markdown(table: pd.DataFrame) -> str:
    lines = []
    rows = row_order()
    for task in _order(table, "task", task_order()):
        part = table[table["task"] == task].set_index("label")
        metric = part["metric"].iloc[0]
        steps = part["relearn/steps"].dropna()
        k = int(steps.max()) if len(steps) else None
        better = "higher" if metric in METRICS and not METRICS.get(metric).lower_is_better else "lower"
        header = (["method", "runs", "before", "after", "worst prompt (variant)", *VARIANTS[1:], f"relearn k={k}",
                   f"fact NLL k=0 → {k} (holdout)", "MIA AUC (retain)", "PrivLeak", "probe acc (chance; holdout)",
                   "logit lens forget (holdout)", "reversion exact"])
        title = f"### {task} — forget score `{metric}`{_unit(metric)}, {better} is better for an unlearned patient"
        lines += [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for label in [l for l in rows if l in part.index] + sorted(l for l in part.index if l not in rows):
            r = part.loc[label]
            cells = [label, str(int(r["n"])), _fmt(r["before"], metric), _fmt(r["after"], metric),
                     f"{_fmt(r.get('prompt/worst'), metric)} ({r['worst_variant'] or '–'})"]
            cells += [_fmt(r.get(f"prompt/{v}"), metric) for v in VARIANTS[1:]]
            cells += [_fmt(r.get("relearn/final"), metric),
                      f"{_fmt(r.get('relearn/fact_nll_start'), digits=2)} → {_fmt(r.get('relearn/fact_nll_final'), digits=2)}"
                      f" ({_fmt(r.get('relearn/holdout_nll_final'), digits=2)})",
                      f"{_fmt(r.get('mia/auc'))} ({_fmt(r.get('mia/auc_retain'))})",
                      _fmt(r.get("mia/privleak"), digits=2),
                      f"{_fmt(r.get('probe/accuracy'), digits=2)} ({_fmt(r.get('probe/chance'), digits=2)}; "
                      f"{_fmt(r.get('probe/holdout'), digits=2)})",
                      f"{_fmt(r.get('probe/lens_forget'), digits=2)} ({_fmt(r.get('probe/lens_holdout'), digits=2)})",
                      _fmt(r.get("reversion/exact"), digits=2)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_scores(table: pd.DataFrame, out: Path, name: str = "robustness") -> list[Path]:
    """Per task: each method's forget score after unlearning, under the worst prompt, and after relearning."""
    tasks, rows = _order(table, "task", task_order()), row_order()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    bars = (("after", "plain question"), ("prompt/worst", "worst prompt"), ("relearn/final", "after relearning"))
    for ax, task in zip(axes[0], tasks):
        part = table[table["task"] == task].set_index("label")
        labels = [l for l in rows if l in part.index] + sorted(l for l in part.index if l not in rows)
        width = 0.8 / len(bars)
        for j, (column, legend) in enumerate(bars):
            values = [part.loc[l].get(column, math.nan) for l in labels]
            ax.bar([i + (j - 1) * width for i in range(len(labels))], values, width, label=legend)
        ax.scatter(range(len(labels)), [part.loc[l]["before"] for l in labels], marker="_", s=300, color="black",
                   zorder=3, label="before unlearning")
        metric = part["metric"].iloc[0]
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(task)
        ax.set_ylabel(f"forget {metric}{_unit(metric)}")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, bbox_to_anchor=(0.5, -0.12))
    fig.suptitle("Forget score under attack (lower = forgotten)")
    return save_figure(fig, out, name)


def _step_columns(runs: pd.DataFrame, prefix: str) -> list[str]:
    return sorted((c for c in runs.columns if c.startswith(prefix) and c[len(prefix):].isdigit()),
                  key=lambda c: int(c[len(prefix):]))


def plot_relearn(runs: pd.DataFrame, out: Path, name: str = "robustness_relearn") -> list[Path]:
    """Per task: the held-out forget part's score (top) and its facts' NLL (bottom) against relearning steps."""
    rows = [("relearn/", None), ("relearn_nll/", "fact NLL (nats) ↓ = recovered")]
    if not _step_columns(runs, "relearn/"):
        log.info("no relearning curves: %s.png skipped", name)
        return []
    tasks, rows_order = _order(runs, "task", task_order()), row_order()
    fig, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 6), squeeze=False, sharex=True)
    for j, task in enumerate(tasks):
        part = runs[runs["task"] == task]
        metric = part["metric"].iloc[0]
        for i, (prefix, ylabel) in enumerate(rows):
            columns, ax = _step_columns(part, prefix), axes[i][j]
            for n, label in enumerate(_order(part, "label", rows_order)):
                runs_of = part[part["label"] == label]
                mean = runs_of[columns].apply(pd.to_numeric, errors="coerce").mean()
                ax.plot([int(c[len(prefix):]) for c in columns], mean.values, marker="o", label=label, color=f"C{n}")
                control = _step_columns(part, "relearn_holdout_nll/") if prefix == "relearn_nll/" else []
                if control:  # never-taught facts under the same relearning: repair, not recovery
                    held = runs_of[control].apply(pd.to_numeric, errors="coerce").mean()
                    ax.plot([int(c.split("/")[1]) for c in control], held.values, ls="--", color=f"C{n}",
                            label=f"{label}, never-taught facts")
            if prefix == "relearn_nll/":
                ax.legend(fontsize=7)
            ax.set_ylabel(ylabel or f"held-out forget {metric}{_unit(metric)}")
        axes[0][j].set_title(task)
        axes[1][j].set_xlabel("relearning steps")
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, out, name)


def write_robustness(root: str | Path, out: str | Path | None = None, name: str = "robustness") -> dict[str, Any]:
    runs = load_robustness(root)
    if runs.empty:
        raise SystemExit(f"no results.json with a `robustness` section below {root}; run with eval/attacks=all")
    out = Path(out or root)
    out.mkdir(parents=True, exist_ok=True)
    table = summarize(runs)
    md = out / f"{name}.md"
    with atomic_path(md) as tmp:
        header = describe_sweep(root, runs["patient"], len(runs))
        tmp.write_text(f"<!-- python -m experiments.robustness — {header} -->\n\n" + to_markdown(table))
    csv = out / f"{name}.csv"
    with atomic_path(csv) as tmp:
        runs.to_csv(tmp, index=False)
    figures = plot_scores(table, out, name) + plot_relearn(runs, out, f"{name}_relearn")
    log.info("robustness of %d runs → %s, %s, %s", len(runs), md, csv, ", ".join(str(p) for p in figures))
    return {"runs": runs, "table": table, "files": [md, csv, *figures]}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", help="folder searched for results.json files (a sweep, or outputs/)")
    parser.add_argument("--out", default=None, help="where to write the table and plots (default: root)")
    parser.add_argument("--name", default="robustness", help="file name stem of the table and the main plot")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write_robustness(args.root, args.out, args.name)


if __name__ == "__main__":
    main()
