"""One forget sample on the default patient: is it forgotten, does retain stay, and how long does one edit take?

    python scripts/bench_stamp_single.py [hydra overrides ...]

For each setting (STAMP; STAMP-LR r=64 with contrasts from the forget question or from the cached retain buffer;
r=128 from the buffer; r=256 from either; env BENCH_SETTINGS="0,5" picks some by index; each method with its own
config's defaults) and each of the first `N` forget questions of pii, in turn: edit for that one question
(activations + solve + calibration and its generated-answer check; wall and CPU seconds, and the activations +
solve part alone; the first edit also fills the per-patient caches and is reported apart), check the question and
its paraphrase are refused, score retain answers (all retain people outside the buffer) and perplexity against
before, revert. Prints a Markdown table (docs/stamp.md).
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import torch

from repair.generation import generate
from repair.methods import build_method
from repair.metrics import perplexity, rouge_l_recall
from repair.setup import compose, implanted_patient, method_config
from repair.tasks.refusals import is_refusal

N = 4


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 2)))  # 1 when another run shares the cores
    cfg = compose("config", ["method=stamp", "logger=none", "task=pii", *sys.argv[1:]])
    method_cfgs = {name: method_config(name, int(cfg.seed), sys.argv[1:])  # each with its own YAML (rank, krylov)
                   for name in ("stamp", "stamp_lowrank")}
    patient, task, _ = implanted_patient(cfg)
    buffer = {q.subject for q in task.retain_buffer}
    retain = [q for q in task.retain if q.subject not in buffer]
    r_q = [q.question for q in retain]
    r_before = generate(patient, r_q, 32)
    rl_before = sum(rouge_l_recall(a, q.answer) for a, q in zip(r_before, retain)) / len(retain)
    ppl_before = perplexity(patient.model, patient.tokenizer, task.corpus)
    print(f"before: R-RL {rl_before:.3f}, PPL {ppl_before:.2f}, {len(retain)} retain questions\n")
    print("| setting | forget question refused | its paraphrase refused | R-RL after / before | retain answers "
          "unchanged | PPL after / before | calibrated strength (median) | edit wall s (first, then median) | "
          "edit CPU s (median) | activations + solve s (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    settings = (("stamp", {}), ("stamp_lowrank", {"rank": 64}),
                ("stamp_lowrank", {"rank": 64, "contrast_source": "buffer"}),
                ("stamp_lowrank", {"rank": 128, "contrast_source": "buffer"}),
                ("stamp_lowrank", {"rank": 256}),
                ("stamp_lowrank", {"rank": 256, "contrast_source": "buffer"}))
    chosen = os.environ.get("BENCH_SETTINGS")  # e.g. "0,5": indices into `settings`
    for index, (name, extra) in enumerate(settings):
        if chosen and str(index) not in chosen.split(","):
            continue
        method = build_method({**dict(method_cfgs[name]), **extra})
        method.prepare(task)
        refused = para = 0
        ratios, unchanged, ppls, walls, cpus, strengths, solves = [], [], [], [], [], [], []
        for q in task.forget[:N]:
            w0, c0 = time.perf_counter(), time.process_time()
            unlearned = method.unlearn(patient, [q], task.retain_buffer)
            report = unlearned.report
            walls.append(time.perf_counter() - w0)
            strengths.append(report["patch"]["strength"])
            solves.append(sum(v for k, v in report["phases"].items()  # keys and solve, not the calibration
                              if k.endswith("_keys") or k in ("forget_logits", "held_gram", "solve")))
            cpus.append(time.process_time() - c0)
            refused += is_refusal(generate(patient, [q.question], 32)[0])
            para += is_refusal(generate(patient, [q.paraphrases[0]], 32)[0])
            r_after = generate(patient, r_q, 32)
            ratios.append(sum(rouge_l_recall(a, r.answer) for a, r in zip(r_after, retain)) / len(retain) / rl_before)
            unchanged.append(sum(a == b for a, b in zip(r_after, r_before)) / len(r_q))
            ppls.append(perplexity(patient.model, patient.tokenizer, task.corpus) / ppl_before)
            method.revert(patient, unlearned.patch)
        label = name + "".join(f" {k}={v}" for k, v in extra.items())
        print(f"| {label} | {refused}/{N} | {para}/{N} | {min(ratios):.3f} (min), {statistics.mean(ratios):.3f} (mean)"
              f" | {100 * min(unchanged):.0f}% (min) | {max(ppls):.4f} (max) | {statistics.median(strengths):.1f} | "
              f"{walls[0]:.2f}, "
              f"{statistics.median(walls[1:]):.2f} | {statistics.median(cpus[1:]):.2f} | "
              f"{statistics.median(solves[1:]):.2f} |", flush=True)


if __name__ == "__main__":
    main()
