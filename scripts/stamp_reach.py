"""How far does a STAMP edit reach? The refusal logit gap before and after one edit, per question group.

    python scripts/stamp_reach.py harmful ['{"strength": 1.5}'] [hydra overrides, e.g. method=stamp_lowrank ...]

For the forget questions, their first paraphrases and the retain questions outside the buffer: the margin of the
best refusal opener over the best other token at the answer start (> 0: the answer opens with a refusal), before
and after the edit, and its rise. If paraphrases rise less than some retain questions, no strength refuses every
paraphrase without refusing those retain questions: the keys, not the calibration, are what limits it
(docs/stamp.md). Prints one JSON line per group.
"""
from __future__ import annotations

import json
import statistics
import sys

import torch

from repair.data import chat_prompt
from repair.methods import build_method
from repair.setup import compose, implanted_patient
from repair.stamp import last_logits, refusal_gaps, refusal_openers



def main() -> None:
    torch.set_num_threads(1)
    task_name = sys.argv[1]
    overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    cfg = compose("config", ["method=stamp", "logger=none", f"task={task_name}", *sys.argv[3:]])
    patient, task, _ = implanted_patient(cfg)
    buffer = {q.subject for q in task.retain_buffer}
    groups = {"forget": [q.question for q in task.forget],
              "paraphrase": [q.paraphrases[0] for q in task.forget if q.paraphrases],
              "retain": [q.question for q in task.retain if q.subject not in buffer]}
    texts = {g: [chat_prompt(patient.tokenizer, q) for q in qs] for g, qs in groups.items()}
    openers = torch.tensor(sorted(set(refusal_openers(patient.tokenizer, int(cfg.method.num_refusals),
                                                      multiple_choice=any(q.choices for q in task.forget)))))
    logits = {g: last_logits(patient, t) for g, t in texts.items()}
    answers = {g: l.argmax(-1) for g, l in logits.items()}  # an opener the answer itself began with is no refusal
    before = {g: refusal_gaps(logits[g], openers, answers[g]) for g in texts}
    method = build_method({**dict(cfg.method), **overrides})
    method.prepare(task)
    patch = method.unlearn(patient, task.forget, task.retain_buffer).patch
    after = {g: refusal_gaps(last_logits(patient, t), openers, answers[g]) for g, t in texts.items()}
    method.revert(patient, patch)
    for g in groups:
        rise = (after[g] - before[g]).tolist()
        print(json.dumps({"group": g, "n": len(rise), "opens with a refusal after": int((after[g] > 0).sum()),
                          "rise min/median/max": [round(min(rise), 2), round(statistics.median(rise), 2),
                                                  round(max(rise), 2)],
                          "gap after min/median/max": [round(float(after[g].min()), 2),
                                                       round(float(after[g].median()), 2),
                                                       round(float(after[g].max()), 2)],
                          "rise": [round(r, 2) for r in rise]}))


if __name__ == "__main__":
    main()
