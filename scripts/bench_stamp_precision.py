"""float32 against float64 for STAMP's keys, Grams and solves (`method.precision`), on one implanted patient.

    python scripts/bench_stamp_precision.py [task=pii] [overrides ...]

For STAMP and STAMP-LR, each precision in turn on the same weights (restored between), each with an empty key store:
the unlearning step's wall seconds and its solve phase, the calibrated strengths, how far the float32 edit is from
the float64 one (‖ΔW₃₂ − ΔW₆₄‖/‖ΔW₆₄‖ over the edited layers, at the strengths each calibrated), and the task's
metrics after the edit (the runner's evaluation). Prints a Markdown table (docs/stamp.md).
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from repair.evaluate import evaluate
from repair.methods import build_method
from repair.setup import compose, implanted_patient, method_config, start

METRICS = ("f_rl", "f_rl_paraphrase", "r_rl", "acc_f", "acc_f_paraphrase", "acc_r", "ppl")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    cfg = compose("config", ["logger=none", "threads=2", "eval/attacks=none", *sys.argv[1:]])
    start(cfg)
    patient, task, _ = implanted_patient(cfg)
    pristine = patient.snapshot()
    rows = []
    for name in ("stamp", "stamp_lowrank"):
        edits = {}
        for precision in ("float64", "float32"):
            patient.restore(pristine)
            patient.cache_dir = Path(tempfile.mkdtemp(prefix="bench-keys-"))
            method = build_method(method_config(name, int(cfg.seed), [f"method.precision={precision}"]))
            method.prepare(task)
            t0 = time.perf_counter()
            unlearned = method.unlearn(patient, task.forget, task.retain_buffer)
            seconds = time.perf_counter() - t0
            edits[precision] = [d.dense(torch.float64) for d in unlearned.patch.deltas]
            metrics, _ = evaluate(patient, task, cfg.eval)
            diff = (sum(float((a - b).norm()) ** 2 for a, b in zip(edits[precision], edits["float64"])) ** 0.5
                    / sum(float(b.norm()) ** 2 for b in edits["float64"]) ** 0.5)
            strengths = unlearned.report["patch"].get("strengths") or [unlearned.report["patch"]["strength"]]
            rows.append((name, precision, seconds, unlearned.report["phases"].get("solve", 0.0), diff,
                         f"{min(strengths):.2f}–{max(strengths):.2f}", metrics))
    patient.restore(pristine)
    keys = [k for k in METRICS if k in rows[0][-1]]
    print(f"{task.name}: {len(task.forget)} forget items, {torch.get_num_threads()} threads\n")
    print("| method | precision | unlearn (s) | solve (s) | ‖ΔW − ΔW₆₄‖/‖ΔW₆₄‖ | strengths | " + " | ".join(keys) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(keys))
    for name, precision, seconds, solve, diff, strengths, metrics in rows:
        print(f"| {name} | {precision} | {seconds:.2f} | {solve:.2f} | {diff:.1e} | {strengths} | "
              + " | ".join(f"{metrics[k]:.4g}" for k in keys) + " |")


if __name__ == "__main__":
    main()
