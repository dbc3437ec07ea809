"""Where the unlearning step's time goes, per phase, for STAMP, STAMP-LR and GA side by side on one implanted patient.

    python scripts/bench_unlearn_phases.py [task=pii] [overrides ...]

One process, one implant (cached), the methods in a row on the same weights (restored between them), 2 torch
threads unless `threads=` says otherwise. Prints a Markdown table: wall seconds per phase (`unlearn.phases`) and in
total, and each method's total as a ratio to GA's. The numbers are for the machine it runs on; run it quiet.
"""
from __future__ import annotations

import logging
import sys
import time

import torch

from repair.methods import build_method
from repair.setup import compose, implanted_patient, method_config, start

METHODS = ("stamp", "stamp_lowrank", "ga")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    cfg = compose("config", ["logger=none", "threads=2", *sys.argv[1:]])
    start(cfg)
    patient, task, _ = implanted_patient(cfg)
    pristine = patient.snapshot()
    rows = {}
    for name in METHODS:
        method = build_method(method_config(name, int(cfg.seed)))
        method.prepare(task)
        patient.restore(pristine)
        t0 = time.perf_counter()
        unlearned = method.unlearn(patient, task.forget, task.retain_buffer)
        rows[name] = (time.perf_counter() - t0, unlearned.report["phases"])
        patient.restore(pristine)
    phases = list(dict.fromkeys(p for _, ph in rows.values() for p in sorted(ph, key=lambda k: -ph[k])))
    ga = rows["ga"][0]
    print(f"{task.name}: {len(task.forget)} forget items, {len(task.retain_buffer)} in the retain buffer, "
          f"{torch.get_num_threads()} threads\n")
    print("| phase | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for p in phases:
        print(f"| {p} | " + " | ".join(f"{ph[p]:.2f}" if p in ph else "–" for _, ph in rows.values()) + " |")
    print("| **total (wall s)** | " + " | ".join(f"**{t:.2f}**" for t, _ in rows.values()) + " |")
    print("| total / GA's | " + " | ".join(f"{t / ga:.2f}×" for t, _ in rows.values()) + " |")


if __name__ == "__main__":
    main()
