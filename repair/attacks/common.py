"""What every attack shares: the forget score of a set of answers, sample limits, and the likelihood of reference
answers."""
from __future__ import annotations

from typing import Sequence

import torch

from repair.data import answer_suffix, answer_token_logprobs, collate, encode
from repair.metrics import aggregate_rows, row_scoring, scored_metric
from repair.patient import Patient
from repair.tasks import QA, Task


def primary_metric(task: Task) -> str:
    """The forget score an attack headlines: the task's own (Acc_f for multiple choice), except exact-fact recall
    where every free-text item has a fact (ROUGE-L credits the answer's template words too)."""
    own = scored_metric(task.scoring, "forget")
    if own.scoring == "rouge" and task.forget and all(q.fact for q in task.forget):
        return "f_fact"
    return own.name


def summarize(rows: Sequence[dict]) -> dict[str, float]:
    """Forget metrics of scored rows (see `repair.evaluate.score_answer`), named and aggregated as the evaluator's
    forget metrics (the `repair.metrics` registry), with the number of rows."""
    return {"n": len(rows)} | aggregate_rows(rows, "forget", row_scoring(rows))


def limited(items: Sequence[QA], eval_cfg: dict) -> list[QA]:
    """The first `eval.max_samples` items (all when unset), as the evaluator does."""
    limit = eval_cfg.get("max_samples")
    return list(items)[: int(limit)] if limit else list(items)


def examples(rows: Sequence[dict], k: int = 2) -> list[dict]:
    """A few generations to read beside the numbers."""
    return [{key: r[key] for key in ("question", "reference", "generation") if key in r} for r in rows[:k]]


@torch.no_grad()
def answer_logprobs(patient: Patient, items: Sequence[QA], batch_size: int = 16) -> list[torch.Tensor]:
    """Per item, the log-probabilities of its reference answer's tokens (chat template, question as context)."""
    examples = encode(patient.tokenizer, items)
    out: list[torch.Tensor] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        logprobs, rows = answer_token_logprobs(patient.model, collate(chunk, patient.tokenizer.pad_token_id,
                                                                      patient.device))
        out += [logprobs[rows == i].cpu() for i in range(len(chunk))]
    return out


def fact_nll(patient: Patient, items: Sequence[QA], batch_size: int = 16) -> float:
    """Mean negative log-likelihood of the facts' own tokens (the whole answer where an item has no fact): a
    graded view of recovery that moves before exact recall does, and that the answer's template cannot lower."""
    tok = patient.tokenizer
    suffix = answer_suffix(tok)
    values = []
    for q, logprobs in zip(items, answer_logprobs(patient, items, batch_size)):
        start = q.answer.find(q.fact) if q.fact else -1
        if start >= 0:
            end = start + len(q.fact)
            offsets = tok(q.answer + suffix, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            keep = [j for j, (a, b) in enumerate(offsets[: len(logprobs)]) if a < end and b > start]
            logprobs = logprobs[keep]
        values.append(float(-logprobs.mean()))
    return sum(values) / max(len(values), 1)
