"""Wall-clock cost of the default job: cold (empty cache: GGUF conversion + implant) and warm (everything cached).

    python scripts/bench_foundation.py [extra run.py overrides]

Runs `run.py` twice on a fresh temporary cache and prints a Markdown table from the two results.json files.
"""
from __future__ import annotations

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


def timed_run(cache: Path, out: Path, extra: list[str]) -> tuple[float, dict]:
    env = os.environ | {"REPAIR_CACHE": str(cache), "WANDB_MODE": "offline"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "run.py", f"hydra.run.dir={out}", *extra], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, json.loads((out / "results.json").read_text())


def main() -> None:
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="repair-bench-") as tmp:
        cold_wall, cold = timed_run(Path(tmp) / "cache", Path(tmp) / "cold", extra)
        warm_wall, warm = timed_run(Path(tmp) / "cache", Path(tmp) / "warm", extra)
    rt_c, rt_w = cold["runtime_s"], warm["runtime_s"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; command: python run.py {' '.join(extra)}\n")
    print("| step | cold cache | warm cache |")
    print("|---|---|---|")
    print(f"| load patient (GGUF → float32, then cached safetensors) | {rt_c['load']:.1f} s | {rt_w['load']:.1f} s |")
    print(f"| implant ({cold['implant'].get('examples')} examples, {len(cold['implant']['loss_history'])} epochs; "
          f"then cache hit) | {rt_c['implant']:.1f} s | {rt_w['implant']:.1f} s |")
    print(f"| evaluate before + after | {rt_c['eval']:.1f} s | {rt_w['eval']:.1f} s |")
    print(f"| unlearn ({cold['method']}, {cold['unlearn'].get('steps')} steps) | {rt_c['unlearn']:.1f} s | "
          f"{rt_w['unlearn']:.1f} s |")
    print(f"| whole job, wall clock (incl. start-up, W&B) | {cold_wall:.0f} s | {warm_wall:.0f} s |")
    print(f"| peak RSS | {cold['peak_rss_mb']:.0f} MB | {warm['peak_rss_mb']:.0f} MB |")
    before, after = cold["metrics"]["before"], cold["metrics"]["after"]
    print("\n| metric | before | after |\n|---|---|---|")
    for key in before:
        print(f"| {key} | {before[key]:.3f} | {after[key]:.3f} |")


if __name__ == "__main__":
    main()
