"""What every attack shares: validated settings, the forget score of a set of answers, and sample limits."""
from __future__ import annotations

from typing import Any, Sequence

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
