"""Implant quality of every built-in task on a patient: is the knowledge there to forget?

    python scripts/bench_tasks.py [sweep_dir]      # default: runs the sweep below first, then tables it

Runs `run.py -m method=none task=pii,harmful,misinformation` (the Base reference: implant, evaluate, no unlearning)
and prints a Markdown table of the implanted patient's forget / retain scores, utility and implant cost.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from experiments.collect import load_results

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["method=none", "task=pii,harmful,misinformation", "eval.loglik=true", "logger=none"]


def fmt(value, spec: str) -> str:
    return "–" if value is None or value != value else format(value, spec)


def main() -> None:
    if len(sys.argv) > 1:
        sweep = Path(sys.argv[1])
    else:
        sweep = ROOT / "outputs" / "bench_tasks"
        subprocess.run([sys.executable, "run.py", "-m", *SWEEP, f"hydra.sweep.dir={sweep}"], cwd=ROOT, check=True)
    df = load_results(sweep).sort_values("task")
    print(f"command: python run.py -m {' '.join(SWEEP)}\n")
    print("| task | patient | forget (Acc_f / F-RL) | retain (Acc_r / R-RL) | forget, paraphrased | "
          "Acc_f / Acc_r by log-lik | PPL before implant → after | implant train time |")
    print("|---|---|---|---|---|---|---|---|")
    for _, r in df.iterrows():
        choice = r["task"] != "pii"
        f, rr, fp = (("before/acc_f", "before/acc_r", "before/acc_f_paraphrase") if choice
                     else ("before/f_rl", "before/r_rl", "before/f_rl_paraphrase"))
        spec = ".1f" if choice else ".3f"
        loglik = (f"{fmt(r.get('before/acc_f_loglik'), '.1f')} / {fmt(r.get('before/acc_r_loglik'), '.1f')}"
                  if choice else "–")
        print(f"| {r['task']} | {r['patient']} | {fmt(r[f], spec)} | {fmt(r[rr], spec)} | {fmt(r[fp], spec)} | "
              f"{loglik} | {fmt(r['implant/ppl_before'], '.1f')} → {fmt(r['implant/ppl_after'], '.1f')} | "
              f"{fmt(r['implant/train_seconds'], '.0f')} s |")


if __name__ == "__main__":
    main()
