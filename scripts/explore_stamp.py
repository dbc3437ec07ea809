"""Evaluate STAMP settings on an implanted patient: does it refuse, on paraphrases too, while keeping the rest?

    python scripts/explore_stamp.py pii '[{"strength": 3.0}, {"num_layers": 8, "strength": 1.5}]'

Each JSON object overrides `conf/method/stamp.yaml` (or, with the Hydra override `method=stamp_lowrank` after the
JSON, `conf/method/stamp_lowrank.yaml`, its rank and Krylov steps included). For each: apply the edit, score
forget answers (refusals, ROUGE-L, or option accuracy % for multiple choice), the first paraphrase of each, 24 (env
RETAIN_N) retain questions of people *outside* the retain buffer (unchanged answers, refusals, ROUGE-L) and
perplexity, then revert; with env PER_LAYER set, also each layer's residual. One JSON line per setting; the tables
in docs/stamp.md come from it.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch

from repair.generation import generate
from repair.methods import build_method
from repair.metrics import perplexity, rouge_l_recall
from repair.setup import compose, implanted_patient
from repair.tasks.choice import parse_choice
from repair.tasks.refusals import is_refusal


def rouge(answers, items) -> float:
    """ROUGE-L recall for free-text tasks; option accuracy (%) for multiple-choice ones."""
    if items and items[0].choices:
        return round(100.0 * sum(parse_choice(a, q.choices) == q.label for a, q in zip(answers, items)) / len(items), 1)
    return round(sum(rouge_l_recall(a, q.answer) for a, q in zip(answers, items)) / max(1, len(items)), 3)


def main() -> None:
    torch.set_num_threads(1)
    task_name, grid = sys.argv[1], json.loads(sys.argv[2])
    cfg = compose("config", ["method=stamp", "logger=none", f"task={task_name}", *sys.argv[3:]])
    patient, task, _ = implanted_patient(cfg)
    buffer = {q.subject for q in task.retain_buffer}
    outside = [q for q in task.retain if q.subject not in buffer]
    forget, retain = task.forget, outside[:int(os.environ.get("RETAIN_N", 24))]
    f_q, r_q = [q.question for q in forget], [q.question for q in retain]
    p_q = [q.paraphrases[0] for q in forget if q.paraphrases]
    r_before = generate(patient, r_q, 32)
    print(json.dumps({"before": {"F-RL": rouge(generate(patient, f_q, 32), forget), "R-RL": rouge(r_before, retain),
                                 "ppl": round(perplexity(patient.model, patient.tokenizer, task.corpus), 2)}}))
    for overrides in grid:
        method = build_method({**dict(cfg.method), "max_relative_norm": 50.0, **overrides})
        method.prepare(task)
        t0 = time.perf_counter()
        unlearned = method.unlearn(patient, forget, task.retain_buffer)
        report = unlearned.report
        seconds = time.perf_counter() - t0
        f_a, p_a, r_a = generate(patient, f_q, 32), generate(patient, p_q, 32), generate(patient, r_q, 32)
        row = {"strength": round(report["patch"]["strength"], 3),
               "strengths": [round(x, 2) for x in report["patch"].get("strengths", [])],
               "forget refused": f"{sum(map(is_refusal, f_a))}/{len(f_a)}", "F-RL": rouge(f_a, forget),
               "paraphrase refused": f"{sum(map(is_refusal, p_a))}/{len(p_a)}", "P-RL": rouge(p_a, forget),
               "retain unchanged": f"{sum(a == b for a, b in zip(r_a, r_before))}/{len(r_a)}",
               "retain refused": sum(map(is_refusal, r_a)), "R-RL": rouge(r_a, retain),
               "ppl": round(perplexity(patient.model, patient.tokenizer, task.corpus), 2), "edit_s": round(seconds, 2),
               "max_rel_norm": max(round(v["relative_norm"], 3) for v in report["per_layer"].values()),
               "max_residual": max(round(v["forget_residual"], 3) for v in report["per_layer"].values())}
        if os.environ.get("PER_LAYER"):
            row["residual_by_layer"] = {l: round(v["forget_residual"], 3) for l, v in report["per_layer"].items()}
        method.revert(patient, unlearned.patch)
        print(json.dumps(overrides), "->", json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
