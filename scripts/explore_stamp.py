"""Grid over STAMP settings on an implanted patient: what makes it refuse while keeping the rest?

    python scripts/explore_stamp.py [hydra overrides ...]        (default: the default patient, task=pii)

For each setting: apply the edit, score the forget answers (refusals, ROUGE-L, exact facts), a retain sample
(unchanged answers, ROUGE-L) and perplexity, then revert. Prints a Markdown table; numbers go to docs/stamp.md.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from repair import patient as patients
from repair.evaluate import generate
from repair.implant import implant
from repair.methods import build_method
from repair.metrics import perplexity, rouge_l_recall
from repair.patches import PatchRejected
from repair.tasks import build_task
from repair.tasks.refusals import is_refusal

CONF = Path(__file__).resolve().parents[1] / "conf"
GRID = {"target": ["direction", "refusal", "unknown"], "layers": [[4, 5, 6, 7], [2, 4, 6, 8, 10, 12]],
        "span_tokens": [1, 4], "strength": [2.0, 6.0]}


def main() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["method=stamp", "logger=none", *sys.argv[1:]])
    patient = patients.load(cfg.patient, cfg.cache_dir)
    task = build_task(cfg.task, int(cfg.seed))
    implant(patient, task, cfg.implant, cfg.cache_dir)
    forget, retain = task.forget, task.retain[:24]
    f_q, r_q = [q.question for q in forget], [q.question for q in retain]
    p_q = [q.paraphrases[0] for q in forget if q.paraphrases]
    r_before = generate(patient, r_q, 32)
    ppl_before = perplexity(patient.model, patient.tokenizer, task.corpus)
    print("| target | layers | span | α | forget refused | F-RL | para refused | retain unchanged | R-RL | PPL | "
          "max ‖ΔW‖/‖W‖ | max residual |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for target, layers, span, alpha in itertools.product(*GRID.values()):
        method = build_method({**dict(cfg.method), "target": target, "layers": layers, "span_tokens": span,
                               "strength": alpha, "max_relative_norm": 50.0})
        method.prepare(task)
        try:
            report = method.unlearn(patient, forget, task.retain_buffer)
        except PatchRejected as err:
            print(f"| {target} | {layers} | {span} | {alpha} | rejected: {err} |")
            continue
        f_a, r_a, p_a = generate(patient, f_q, 32), generate(patient, r_q, 32), generate(patient, p_q, 32)
        ppl = perplexity(patient.model, patient.tokenizer, task.corpus)
        method.patch.revert(patient.model)
        per = report["per_layer"].values()
        print(f"| {target} | {layers} | {span} | {alpha} | {sum(map(is_refusal, f_a))}/{len(f_a)} | "
              f"{sum(rouge_l_recall(a, q.answer) for a, q in zip(f_a, forget)) / len(f_a):.2f} | "
              f"{sum(map(is_refusal, p_a))}/{len(p_a)} | "
              f"{sum(a == b for a, b in zip(r_a, r_before))}/{len(r_a)} | "
              f"{sum(rouge_l_recall(a, q.answer) for a, q in zip(r_a, retain)) / len(r_a):.2f} | "
              f"{ppl:.1f} (was {ppl_before:.1f}) | {max(v['relative_norm'] for v in per):.2f} | "
              f"{max(v['forget_residual'] for v in per):.3f} |", flush=True)
        if layers == GRID["layers"][0] and span == 1 and alpha == GRID["strength"][0]:
            print("<!-- example forget answers:", f_a[:3], "-->", flush=True)


if __name__ == "__main__":
    main()
