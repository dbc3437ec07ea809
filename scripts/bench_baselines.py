"""Every training baseline through the runner on one task, as a Markdown table: forget / retain / utility after
unlearning, whether the paper-style operating point (Acc_f <= 5 % or F-RL <= 0.15) was reached, unlearning time
(wall and process CPU seconds: on a shared machine the wall clock also measures the neighbours) and the memory the
unlearning phase itself took.

    python scripts/bench_baselines.py [--task pii] [--methods ga,npo,rmu,flat,wga,asu] [--out DIR] [overrides ...]

(default --methods: every method the `baselines` package registers, in the paper's order)

Each method is one `run.py` process (default patient, cached implant, W&B off), so peak RSS is per method.
Unlearn-phase memory comes from `results.json` → unlearn.memory (sampled resident set size during unlearning;
`peak_rss_increase_mb` is what the phase added on top of the loaded, evaluated patient); on CUDA the allocator's
peak is reported as well.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repair.methods import load_builtin  # noqa: E402
from repair.metrics import METRICS, scored_metric  # noqa: E402

OPERATING_POINT = {"acc_f": 5.0, "f_rl": 0.15}  # forget at most this (Acc_f in %, F-RL ROUGE-L recall)


def training_baselines() -> list[str]:
    """The methods of the `baselines` package (repair.methods registry), in the paper's order."""
    methods = load_builtin()
    return [name for name in methods.in_order() if methods.get(name).__module__.startswith("baselines.")]


def run_method(method: str, task: str, out: Path, extra: list[str]) -> tuple[float, dict]:
    env = os.environ | {"WANDB_MODE": "offline"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "run.py", f"method={method}", f"task={task}", "logger=none",
                           f"hydra.run.dir={out}", *extra], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"run.py method={method} task={task} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, json.loads((out / "results.json").read_text())


def fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def brief(key: str, value) -> str:
    """A metric with its compact digits (repair.metrics)."""
    return "–" if value is None else METRICS.get(key).brief(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="pii")
    parser.add_argument("--methods", default=",".join(training_baselines()))
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="extra run.py overrides, e.g. threads=1")
    args = parser.parse_args()
    out_root = args.out or Path(tempfile.mkdtemp(prefix="repair-bench-baselines-"))
    rows = []
    for method in args.methods.split(","):
        wall, res = run_method(method, args.task, out_root / f"{method}_{args.task}", args.overrides)
        rows.append((method, wall, res))
        print(f"{method}: done in {wall:.0f} s", file=sys.stderr, flush=True)
    first = rows[0][2]
    before = first["metrics"]["before"]
    scoring = "choice" if scored_metric("choice").name in before else "rouge"
    f_key, r_key = scored_metric(scoring, "forget").name, scored_metric(scoring, "retain").name
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"task={args.task}; overrides: {' '.join(args.overrides) or 'none'}\n")
    extra = [k for k in ("f_fact", "r_fact", scored_metric(scoring, "forget_paraphrase").name) if k in before]
    head = [f_key, r_key, *extra, "ppl"]
    print(f"| method | {' | '.join(head)} | operating point | steps | unlearn s (CPU s) "
          f"| unlearn peak RSS MB (+ added) | process peak RSS MB |")
    print(f"|---|{'---|' * len(head)}---|---|---|---|---|")
    print(f"| before | {' | '.join(brief(k, before.get(k)) for k in head)}"
          " | – | – | – | – | – |")
    for method, _, res in rows:
        after, unlearn = res["metrics"]["after"], res["unlearn"]
        mem = unlearn.get("memory", {})
        reached = after[f_key] <= OPERATING_POINT[f_key]
        cells = " | ".join(brief(k, after.get(k)) for k in head)
        print(f"| {method} | {cells} | {'yes' if reached else 'no'} | {unlearn.get('steps', '–')} | "
              f"{res['runtime_s']['unlearn']:.1f} ({fmt(unlearn.get('train_cpu_seconds'), 0)}) | "
              f"{fmt(mem.get('peak_rss_mb'), 0)} "
              f"(+{fmt(mem.get('peak_rss_increase_mb'), 0)}) | {res['peak_rss_mb']:.0f} |")
    print(f"\nruns kept in {out_root}")


if __name__ == "__main__":
    main()
