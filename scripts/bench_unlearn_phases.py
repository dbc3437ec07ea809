"""Where the unlearning step's time goes, per phase: STAMP and STAMP-LR with an empty and a filled key store, one
single-question request, and training baselines, side by side on one implanted patient.

    python scripts/bench_unlearn_phases.py [task=pii] [overrides ...] [--baselines ga,npo,...] [--rss]

One process, one implant (cached), the methods in a row on the same weights (restored between them), 2 torch
threads unless `threads=` says otherwise. STAMP's key store (`method.store_keys`) goes to a fresh temporary folder:
"cold" runs start with it empty, as the first run on an implanted patient does; "warm" runs start with the memory
cleared and the store filled by the cold run, as a later run, or a chat session's next request, on the same weights
does. "single" is one forget question alone (the chat's case) on the warm store, "single again" the same request
once more (everything it needs is stored: a chat's later request of a form seen before). Prints a Markdown table of wall
seconds per phase (`unlearn.phases`) and in total, with each total as a ratio to the fastest baseline's.

`--rss` instead measures the peak resident memory of a whole process (load, implant from the cache, unlearn) for
`none`, STAMP and STAMP-LR (cold store) and each baseline, one fresh process each. The numbers are for the machine
it runs on; run it quiet.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from repair.methods import build_method
from repair.setup import compose, implanted_patient, method_config, start

STAMPS = ("stamp", "stamp_lowrank")


def unlearn_once(name: str, cfg, patient, task, forget) -> tuple[float, dict]:
    method = build_method(method_config(name, int(cfg.seed)))
    method.prepare(task)
    t0 = time.perf_counter()
    unlearned = method.unlearn(patient, forget, task.retain_buffer)
    return time.perf_counter() - t0, unlearned.report.get("phases", {})


def timings(cfg, baselines: list[str]) -> None:
    start(cfg)
    patient, task, _ = implanted_patient(cfg)
    pristine = patient.snapshot()
    patient.cache_dir = Path(tempfile.mkdtemp(prefix="bench-keys-"))  # an empty store, this run's own
    rows: dict[str, tuple[float, dict]] = {}
    plan = [(f"{n} {kind}", n, task.forget if kind in ("cold", "warm") else task.forget[:1])
            for kind in ("cold", "warm", "single", "single again") for n in STAMPS]
    plan += [(n, n, task.forget) for n in baselines]
    for label, name, forget in plan:
        if label.endswith("cold"):
            patient.cache_dir = Path(tempfile.mkdtemp(prefix="bench-keys-"))
        patient.restore(pristine)
        rows[label] = unlearn_once(name, cfg, patient, task, forget)
        patient.restore(pristine)
    phases = list(dict.fromkeys(p for _, ph in rows.values() for p in sorted(ph, key=lambda k: -ph[k])))
    fastest = min((rows[b][0] for b in baselines), default=None)
    print(f"{task.name}: {len(task.forget)} forget items ('single': 1), {len(task.retain_buffer)} in the retain "
          f"buffer, {torch.get_num_threads()} threads\n")
    print("| phase | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for p in phases:
        print(f"| {p} | " + " | ".join(f"{ph[p]:.2f}" if p in ph else "–" for _, ph in rows.values()) + " |")
    print("| **total (wall s)** | " + " | ".join(f"**{t:.2f}**" for t, _ in rows.values()) + " |")
    if fastest:
        print("| fastest baseline's / total | " + " | ".join(f"{fastest / t:.1f}×" for t, _ in rows.values()) + " |")


def rss_child(cfg, name: str) -> None:
    """One process: load, implant (cached) and unlearn with `name` (a cold key store); prints the peak RSS."""
    start(cfg)
    patient, task, _ = implanted_patient(cfg)
    patient.cache_dir = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    seconds = unlearn_once(name, cfg, patient, task, task.forget)[0] if name != "none" else 0.0
    print(json.dumps({"method": name, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "unlearn_s": seconds}))


def rss(overrides: list[str], baselines: list[str]) -> None:
    rows = []
    for name in ["none", *STAMPS, *baselines]:
        out = subprocess.run([sys.executable, __file__, "--rss-child", name, *overrides], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    none = rows[0]["peak_rss_mb"]
    print("| method | peak RSS (MB) | / none's | unlearn (s) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / none:.2f}× | {r['unlearn_s']:.1f} |")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baselines", default="ga", help="comma-separated training methods to time beside STAMP")
    parser.add_argument("--rss", action="store_true", help="peak resident memory per method, one process each")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    overrides = ["logger=none", "threads=2", *overrides]
    baselines = [b for b in args.baselines.split(",") if b]
    if args.rss_child:
        rss_child(compose("config", overrides), args.rss_child)
    elif args.rss:
        rss(overrides, baselines)
    else:
        timings(compose("config", overrides), baselines)


if __name__ == "__main__":
    main()
