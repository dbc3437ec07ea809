"""The chat's knowledge check on the default patient: an edit for every person it was taught, none for anyone else.

    python scripts/bench_knowledge_check.py [--write] [hydra overrides ...]

For each person — taught (the task's forget and retain people; the retain buffer's are the calibration's taught
references and are reported apart), holdout (never taught), IdK (taught to answer "I don't know"), names from the
task's subject pool past the calibration's references, and invented names outside every name stock — the session's
person probes are answered and assessed as a forget request would be (`RepairSession.apply`: everything refused →
no edit; otherwise `KnowledgeCheck.assess`). Nothing is edited. Prints a Markdown table; `--write` replaces the
section between the markers in docs/interactive.md.
"""
from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path

import torch

from repair.interactive.session import open_session
from repair.io import replace_section
from repair.setup import compose
from repair.tasks.refusals import is_refusal

DOC = Path(__file__).resolve().parents[1] / "docs" / "interactive.md"
START, END = "<!-- knowledge_check:start -->", "<!-- knowledge_check:end -->"
INVENTED = ["Bartholomew Quincefield", "Marguerite Oakenshield", "Xavier Plumtree", "Ottilie Brackenbury",
            "Cornelius Wexford", "Philippa Dunstable", "Ignatius Farthingale", "Rosamund Pettigrew"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"replace the report section of {DOC}")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    cfg = compose("chat", ["task=pii", "logger=none", f"ledger.dir={tempfile.mkdtemp(prefix='kc-ledger-')}",
                           *args.overrides])
    session = open_session(cfg, tempfile.mkdtemp(prefix="kc-chat-"))
    task, check = session.task, session.knowledge
    t0 = time.perf_counter()
    calibration = check.calibration()
    calibration_s = time.perf_counter() - t0
    taught_refs, unseen_refs = check.references()
    buffer = list(dict.fromkeys(q.subject for q in task.retain_buffer))
    groups = {
        "taught (forget + retain)": [s for s in dict.fromkeys(q.subject for q in [*task.forget, *task.retain])
                                     if s not in buffer],
        "taught (retain buffer: calibration)": buffer,
        "holdout (never taught)": list(dict.fromkeys(q.subject for q in task.holdout)),
        "IdK (taught: 'I don't know')": list(dict.fromkeys(q.subject for q in task.idk)),
        "subject pool (never taught)": [s for s in task.subject_pool if s not in unseen_refs][:8],
        "invented names": INVENTED,
    }
    rows, mistakes, seconds = [], [], []
    for group, subjects in groups.items():
        edits = refused = borrowed = guessed = 0
        scores = []
        for subject in subjects:
            probes, answers = check.ask(subject)
            t0 = time.perf_counter()
            if all(map(is_refusal, answers)):
                known, reason = False, "refuses every probe"
                refused += 1
            else:
                verdict = check.assess(subject, probes, answers)
                known, reason = verdict.known, verdict.evidence()
                scores.append(verdict.score)
                borrowed += any(p["borrowed_from"] for p in verdict.probes)
                guessed += not known and not any(p["borrowed_from"] for p in verdict.probes)
            seconds.append(time.perf_counter() - t0)
            edits += known
            should = group.startswith("taught")
            if known != should:
                mistakes.append(f"{group}: {subject} — {'edited' if known else 'no edit'} ({reason})")
        finite = [s for s in scores if math.isfinite(s)]
        span = f"{min(finite):.2f} … {max(finite):.2f}" if finite else "–"
        rows.append(f"| {group} | {len(subjects)} | **{edits}** | {refused} | {borrowed} | {guessed} | {span} |")
    text = "\n".join([
        f"Default patient, pii (seed {cfg.seed}), 2 threads. Calibrated on taught {', '.join(taught_refs)} against "
        f"never-taught {', '.join(unseen_refs)}: threshold **{calibration['threshold']:.2f}** "
        f"(scores {', '.join(f'{k} {v:.2f}' if v is not None else f'{k} -inf' for k, v in calibration['scores'].items())}); "
        f"calibration {calibration_s:.1f} s once per base model (cached in the ledger folder), then "
        f"{1000 * sorted(seconds)[len(seconds) // 2]:.0f} ms per request (median; the probe answers are the "
        f"verification's own).",
        "",
        "| people | n | edited | refuse every probe | some answer borrowed | guessed (below threshold) | scores "
        "(median lowest-token log-prob, finite ones) |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "Mistakes: " + ("; ".join(mistakes) if mistakes else "none — an edit for every taught person, none for "
                        "anyone else."),
    ])
    print(text)
    if args.write:
        replace_section(DOC, START, END, text)


if __name__ == "__main__":
    main()
