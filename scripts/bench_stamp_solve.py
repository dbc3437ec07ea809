"""Full vs low-rank STAMP solve time for MLP widths from SmolLM2's (1536) to Llama-3-8B's (14336).

    python scripts/bench_stamp_solve.py [--widths 1536 4096 8192 14336] [--ranks 64 128] [--krylov-steps 32]
                                        [--dtype float32]

Random keys stand in for activations (the solve's cost depends only on the shapes): 16 forget keys, 256 retain
keys and 2048 generic keys held in place, output width d = hidden size; `--dtype` as `method.precision` (float32,
STAMP's default, or float64). The held keys'
Gram (and, for STAMP-LR, its top directions) does not depend on the request and is cached per patient: its one-time
cost is a column of its own; the per-request columns are what one edit pays. STAMP-LR's default subspace starts
with the forget keys' block Krylov space (`krylov_steps`, per request: one m × m by m × 16 product per step).
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from repair.stamp import full_solve, held_gram, lowrank_solve, top_directions

HIDDEN = {1536: 576, 4096: 1024, 8192: 2048, 14336: 4096}  # MLP width → hidden size of a typical model


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="+", default=[1536, 4096, 8192, 14336])
    ap.add_argument("--ranks", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--krylov-steps", type=int, default=32)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}\n")
    print("| MLP width m | hidden d | held Gram (once) | full solve | " + " | ".join(
        f"directions r={r} (once) | low-rank r={r} | low-rank r={r}, Krylov" for r in args.ranks) + " |")
    print("|---|---|---|---|" + "---|---|---|" * len(args.ranks))
    g = torch.Generator().manual_seed(0)
    for m in args.widths:
        d = HIDDEN.get(m, m // 4)
        k_f, k_r, k_c = (torch.randn(n, m, generator=g, dtype=dtype) for n in (16, 256, 2048))
        t = torch.randn(16, d, generator=g, dtype=dtype)
        t0 = time.perf_counter()
        gram = held_gram(k_r, k_c, 1.0, 1.0)
        once = time.perf_counter() - t0
        cells = [f"{once:.2f} s", f"{timed(lambda: full_solve(k_f, t, gram, 1e-2)):.2f} s"]
        for r in args.ranks:
            t0 = time.perf_counter()
            directions = top_directions(gram, r)
            cells.append(f"{time.perf_counter() - t0:.2f} s")
            cells.append(f"{timed(lambda: lowrank_solve(k_f, t, gram, 1e-2, r, directions)):.3f} s")
            krylov = timed(lambda: lowrank_solve(k_f, t, gram, 1e-2, r, directions, krylov_steps=args.krylov_steps))
            cells.append(f"{krylov:.3f} s")
        print(f"| {m} | {d} | " + " | ".join(cells) + " |", flush=True)
        del gram


if __name__ == "__main__":
    main()
