"""Unlearning time and forget/retain quality against the forget-set size: the paper's argument for a closed-form edit,
measured. One implanted patient (half of pii's profiles in the forget split; `task.forget_limit` requests the first N
forget items, the rest stay taught and unscored, so one implant serves every size), each method at each size on the
same weights (restored between runs), side by side in one process.

    python scripts/bench_scaling.py [--sizes 1,2,4,8,16,32] [--methods stamp,stamp_lowrank,ga,npo] \
        [--out docs/results] [overrides ...]

STAMP and STAMP-LR run twice per size: with an empty key store ("cold", the first run on these weights) and again,
as a new method, with the store the first run left ("warm", a later run or chat request); their edits are the same
bit for bit, so quality is recorded once. Quality: F-RL and R-RL (ROUGE-L recall of greedy answers) on the requested
forget items and on the first `eval.max_samples` retain items; Base is the implanted patient. Methods run with their
own YAML (conf/method/<name>.yaml). Writes `scaling.csv` (after each size) and `scaling.png`/`.pdf` to `--out` and
prints a Markdown table; `--plot-only` redraws the figure from the CSV. Run it quiet: times are wall clock.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from repair.evaluate import evaluate
from repair.io import atomic_path
from repair.methods import build_method, load_builtin
from repair.setup import compose, implanted_patient, method_config, start
from repair.tasks import build_task

log = logging.getLogger("bench_scaling")
DEFAULTS = ["logger=none", "threads=2", "task=pii", "task.forget_ratio=0.5", "eval.max_samples=32",
            "eval.paraphrases=false", "eval.ppl=false"]


def measure(sizes: list[int], methods: list[str], overrides: list[str], out: Path) -> pd.DataFrame:
    cfg = compose("config", [*DEFAULTS, *overrides])
    start(cfg)
    patient, full, _ = implanted_patient(cfg)
    if max(sizes) > len(full.forget):
        raise ValueError(f"--sizes up to {max(sizes)} need that many forget items; the task has {len(full.forget)} "
                         f"(raise task.num_profiles or task.forget_ratio)")
    pristine = patient.snapshot()
    rows = []
    for n in sizes:
        task = build_task(compose("config", [*DEFAULTS, *overrides, f"task.forget_limit={n}"]).task, int(cfg.seed))
        base, _ = evaluate(patient, task, cfg.eval)
        rows.append({"method": "none", "label": "Base", "forget_items": n, "seconds": 0.0, "store": "",
                     "f_rl": base["f_rl"], "r_rl": base["r_rl"]})
        for name in methods:
            stamp = name.startswith("stamp")
            if stamp:
                patient.cache_dir = Path(tempfile.mkdtemp(prefix="scaling-keys-"))
            for store in (["cold", "warm"] if stamp else [""]):
                patient.restore(pristine)
                method = build_method(method_config(name, int(cfg.seed)))
                method.prepare(task)
                t0 = time.perf_counter()
                method.unlearn(patient, task.forget, task.retain_buffer)
                seconds = time.perf_counter() - t0
                metrics = evaluate(patient, task, cfg.eval)[0] if store != "warm" else {}
                rows.append({"method": name, "label": load_builtin().label(name), "forget_items": n, "seconds": seconds,
                             "store": store, "f_rl": metrics.get("f_rl"), "r_rl": metrics.get("r_rl")})
                log.info("%s", rows[-1])
        patient.restore(pristine)
        write_csv(pd.DataFrame(rows), out)  # after each size: a long run stopped early keeps what it measured
    return pd.DataFrame(rows)


def write_csv(frame: pd.DataFrame, out: Path) -> None:
    with atomic_path(out / "scaling.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4g")


def plot(frame: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_q) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {label: f"C{k}" for k, label in enumerate(frame["label"].unique())}  # one colour per method, both panels
    for (label, store), sub in frame[frame["method"] != "none"].groupby(["label", "store"], sort=False):
        ax_t.plot(sub["forget_items"], sub["seconds"], "o:" if store == "warm" else "o-", color=colors[label],
                  label=f"{label} ({store} store)" if store else label)
    for label, sub in frame[frame["store"] != "warm"].groupby("label", sort=False):
        ax_q.plot(sub["forget_items"], sub["f_rl"], "o--", color=colors[label], label=f"{label} forget")
        ax_q.plot(sub["forget_items"], sub["r_rl"], "o-", color=colors[label], label=f"{label} retain")
    for ax, ylabel in ((ax_t, "unlearning time (s)"), (ax_q, "F-RL (dashed) / R-RL (solid)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(frame["forget_items"].unique()), [str(v) for v in sorted(frame["forget_items"].unique())])
        ax.set(xlabel="forget items requested |D_f|", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"scaling.{suffix}", dpi=150)
    plt.close(fig)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,2,4,8,16,32")
    parser.add_argument("--methods", default="stamp,stamp_lowrank,ga,npo")
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from the CSV in --out")
    args, overrides = parser.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot_only:
        return plot(pd.read_csv(out / "scaling.csv").fillna({"store": ""}), out)
    frame = measure([int(s) for s in args.sizes.split(",")], args.methods.split(","), overrides, out)
    plot(frame, out)
    print(frame.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    sys.exit(main())
