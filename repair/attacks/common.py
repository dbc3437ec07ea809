"""What every attack shares: validated settings, the forget score of a set of answers, sample limits, and the
likelihood of reference answers."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from repair.data import answer_suffix, answer_token_logprobs, collate, encode
from repair.patient import Patient
from repair.tasks import QA, Task


def settings(attack: str, cfg: dict, defaults: dict[str, Any]) -> dict[str, Any]:
    """`defaults` updated by `cfg`; a key the attack does not know fails, naming the valid keys."""
    unknown = sorted(set(cfg) - set(defaults) - {"seed"})
    if unknown:
        raise ValueError(f"eval.attacks.{attack} has unknown setting(s) {unknown}; valid: {', '.join(sorted(defaults))}")
    return defaults | {"seed": 0} | dict(cfg)


def check(condition: bool, attack: str, key: str, value: Any, valid: str) -> None:
    if not condition:
        raise ValueError(f"eval.attacks.{attack}.{key} = {value!r} is invalid; valid: {valid}")


def primary_metric(task: Task) -> str:
    """The forget score an attack headlines: Acc_f for multiple choice, exact-fact recall where every item has
    a fact (ROUGE-L credits the answer's template words), else ROUGE-L recall."""
    if task.scoring == "choice":
        return "acc_f"
    return "f_fact" if task.forget and all(q.fact for q in task.forget) else "f_rl"


def summarize(rows: Sequence[dict]) -> dict[str, float]:
    """Forget metrics of scored rows (see `repair.evaluate.score_answer`), named as in results.json."""
    n = max(len(rows), 1)
    out: dict[str, float] = {"n": len(rows)}
    if rows and "correct" in rows[0]:
        out["acc_f"] = 100.0 * sum(r["correct"] for r in rows) / n
    else:
        out["f_rl"] = sum(r["rouge_l_recall"] for r in rows) / n
    facts = [r["fact_recalled"] for r in rows if "fact_recalled" in r]
    if facts:
        out["f_fact"] = 100.0 * sum(facts) / len(facts)
    return out


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
