"""Does the Base reproduce on another CPU? The implanted patient's metrics under several torch kernel settings.

    python scripts/bench_base.py                                   # pii under native and avx2 kernels
    python scripts/bench_base.py --tasks pii,harmful --settings native,avx2,default

For each setting, `run.py method=none task=T` runs in a subprocess with `ATEN_CPU_CAPABILITY` set (see
scripts/portability.py) and a cache of its own (only the converted patient is shared), so every setting trains its
own implant. Prints one row per task and setting: epochs until every taught fact was recalled, implant time, and
the Base metrics, which should agree to within one question.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from portability import SETTINGS, capability  # noqa: E402

METRICS = {"rouge": ("f_fact", "r_fact", "f_rl", "r_rl"), "choice": ("acc_f", "acc_r", "acc_f_paraphrase")}


def run(task: str, setting: str, out: Path, overrides: list[str]) -> dict:
    cache = out / f"cache-{setting}"
    shared = Path(os.environ.get("REPAIR_CACHE", "~/.cache/repair")).expanduser() / "patients"
    cache.mkdir(parents=True, exist_ok=True)
    if shared.is_dir() and not (cache / "patients").exists():
        (cache / "patients").symlink_to(shared)  # the converted patient only; every setting implants anew
    folder = out / f"{task}-{setting}"
    cmd = [sys.executable, "run.py", "method=none", f"task={task}", "logger=none", "threads=2",
           f"cache_dir={cache}", f"hydra.run.dir={folder}", "resume=false", *overrides]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, **SETTINGS[setting]}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((folder / "results.json").read_text())


def row(task: str, setting: str, res: dict) -> str:
    base, implant = res["metrics"]["before"], res["implant"]
    keys = METRICS["choice" if "acc_f" in base else "rouge"]
    scores = ", ".join(f"{k} {base[k]:.3g}" for k in keys if k in base)
    epochs = f"{implant.get('epochs', len(implant['loss_history']))}"
    recall = implant.get("recall_history") or [float("nan")]
    return (f"| {task} | `{setting}` ({capability(setting)}) | {epochs} "
            f"({'converged' if implant.get('converged') else 'cap hit'}, recall {recall[-1]:.3f}) | "
            f"{implant['train_seconds']:.0f} s | {scores} | {base['ppl']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="pii")
    parser.add_argument("--settings", default="native,avx2")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_base")
    parser.add_argument("overrides", nargs="*", help="extra run.py overrides (after --)")
    args = parser.parse_args()
    rows = []
    for task in args.tasks.split(","):
        for setting in args.settings.split(","):
            rows.append(row(task, setting, run(task, setting, args.out, args.overrides)))
            print(rows[-1], flush=True)
    print("\n| task | kernels | implant epochs | implant time | Base metrics | PPL |\n|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
