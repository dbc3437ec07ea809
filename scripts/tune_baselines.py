"""Quick in-process sweep of baseline settings: load and implant the patient once, then for each trial restore the
implanted weights, unlearn and score forget / retain / utility. Cheaper than `run.py -m` (no start-up, no
before-evaluation per trial), for choosing defaults; report final numbers with `run.py` (scripts/bench_baselines.py).

    python scripts/tune_baselines.py --base task=pii threads=1 eval.max_samples=24 \
        --trial "method=npo method.lr=3e-5" --trial "method=npo method.lr=1e-4"

Each --trial is a space-separated list of Hydra overrides on top of --base. Prints one Markdown row per trial.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import time

from repair import evaluate as evaluation
from repair.methods import build_method
from repair.setup import compose, implanted_patient, start

log = logging.getLogger("tune_baselines")


def compose_cfg(overrides: list[str]):
    return compose("config", ["logger=none", "eval.paraphrases=false", *overrides])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", nargs="*", default=[], help="overrides shared by every trial")
    parser.add_argument("--trial", action="append", default=[], help="overrides of one trial (quoted)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    base = compose_cfg(args.base)
    start(base)
    patient, task, _ = implanted_patient(base)
    pristine = patient.snapshot()
    before, _ = evaluation.evaluate(patient, task, base.eval)
    keys = list(before)
    print(f"\n| trial | steps | unlearn s (CPU s) | {' | '.join(keys)} |\n|---|---|---|{'---|' * len(keys)}")
    print(f"| before | – | – | {' | '.join(f'{before[k]:.3f}' for k in keys)} |", flush=True)
    for trial in args.trial:
        overrides = shlex.split(trial)
        cfg = compose_cfg([*args.base, *overrides])
        patient.restore(pristine)
        start(cfg)
        method = build_method(cfg.method)
        method.prepare(task)
        t0 = time.perf_counter()
        report = method.unlearn(patient, task.forget, task.retain_buffer).report
        seconds = time.perf_counter() - t0
        after, _ = evaluation.evaluate(patient, task, cfg.eval)
        log.info("%s: %s", trial, {k: v for k, v in report.items() if k not in ("history",)})
        cells = " | ".join(f"{after[k]:.3f}" if k in after else "–" for k in keys)
        cpu = report.get("train_cpu_seconds", float("nan"))
        print(f"| {trial} | {report.get('steps', '–')} | {seconds:.0f} ({cpu:.0f}) | {cells} |", flush=True)
    patient.restore(pristine)


if __name__ == "__main__":
    main()
