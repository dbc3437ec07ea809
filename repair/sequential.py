"""Unlearning requests in a row (`sequential.steps=N`), a setting the paper names as a limitation and did not study.

The forget set is split by subject into N requests that are applied one after another to the same patient; after
each one the patient is evaluated on everything requested so far and on the retain set, so the run records whether
earlier forgetting holds and how far retain knowledge and utility drift as edits pile up.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from repair import evaluate as evaluation
from repair.methods import Unlearned
from repair.patient import Patient
from repair.progress import progress
from repair.tasks import QA, Task

log = logging.getLogger(__name__)


def split_requests(forget: list[QA], steps: int) -> list[list[QA]]:
    """`steps` requests of whole subjects (sizes differ by at most one subject), in the forget set's order."""
    subjects = list(dict.fromkeys(q.subject for q in forget))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"sequential.steps must be a positive integer, got {steps!r}")
    if steps > len(subjects):
        raise ValueError(f"sequential.steps={steps} but the forget set has only {len(subjects)} subjects; valid: "
                         f"1..{len(subjects)} (raise task.forget_ratio for more)")
    size, extra = divmod(len(subjects), steps)
    groups, start = [], 0
    for i in range(steps):
        end = start + size + (1 if i < extra else 0)
        chosen = set(subjects[start:end])
        groups.append([q for q in forget if q.subject in chosen])
        start = end
    return groups


def plan(task: Task, cfg) -> list[list[QA]] | None:
    """The requests of a sequential run (None for the usual single request); fails on a bad `sequential.steps`
    as soon as the task is built, before any slow step."""
    steps = (cfg.get("sequential") or {}).get("steps", 1)
    return None if steps in (None, 1) else split_requests(task.forget, steps)


def unlearn(method, patient: Patient, task: Task, cfg) -> Unlearned:
    """One request with the whole forget set (the default), or `sequential.steps` requests with an evaluation
    after each. The report of a sequence holds `sequence`: one entry per request with its metrics and its time;
    its patch is the last request's (a patch-based method's earlier edits stay applied under it)."""
    requests = plan(task, cfg)
    if requests is None:
        return method.unlearn(patient, task.forget, task.retain_buffer)
    sequence: list[dict[str, Any]] = []
    done: list[QA] = []
    for i, request in enumerate(progress(requests, desc="requests")):
        t0 = time.perf_counter()
        result = method.unlearn(patient, request, task.retain_buffer)
        seconds = time.perf_counter() - t0
        done += request
        metrics, _ = evaluation.evaluate(patient, dataclasses.replace(task, forget=list(done)), cfg.eval)
        log.info("request %d/%d (%d items) in %.1f s; on everything requested so far: %s", i + 1, len(requests),
                 len(request), seconds, ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        sequence.append({"request": i + 1, "subjects": list(dict.fromkeys(q.subject for q in request)),
                         "items": len(request), "requested_so_far": len(done), "unlearn_s": seconds,
                         "metrics": metrics, "report": result.report})
    phases: dict[str, float] = {}
    for step in sequence:  # the whole sequence's time per phase
        for name, seconds in step["report"].get("phases", {}).items():
            phases[name] = phases.get(name, 0.0) + seconds
    return Unlearned({"requests": len(requests), "phases": phases, "sequence": sequence}, result.patch)
