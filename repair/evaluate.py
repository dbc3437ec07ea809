"""Batched greedy generation and scoring → a metrics dict plus per-sample records. The evaluator never edits."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

from repair.generation import generate
from repair.loglik import choice_loglik_accuracy, run_lm_eval
from repair.metrics import SCORINGS, aggregate_rows, perplexity, rouge_l_recall
from repair.patient import Patient
from repair.settings import build, invalid, require
from repair.tasks import QA, Task
from repair.tasks.choice import parse_choice

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LmEvalSettings:
    """`eval.lm_eval`: optional lm-eval utility tasks run after unlearning."""

    tasks: list[str]
    include_path: str | None
    limit: int | float | None

    def check(self) -> None:
        require(all(self.tasks), "eval.lm_eval.tasks", self.tasks,
                "a list of lm-eval task names, e.g. [mmlu] (empty: none)")
        include = self.include_path
        require(include is None or Path(include).expanduser().is_dir(), "eval.lm_eval.include_path", include,
                "null or an existing folder of lm-eval task YAMLs")
        limit = self.limit
        whole = isinstance(limit, int) and limit >= 1
        require(limit is None or whole or (isinstance(limit, float) and 0 < limit < 1), "eval.lm_eval.limit", limit,
                "null (every example), an integer >= 1 (examples per task) or a fraction in (0, 1)")


@dataclasses.dataclass
class EvalSettings:
    """The `eval` section (conf/eval/default.yaml, where the defaults and their meaning are)."""

    max_new_tokens: int
    batch_size: int
    max_samples: int | None
    paraphrases: bool
    ppl: bool
    loglik: bool
    lm_eval: LmEvalSettings
    attacks: dict  # eval.attacks: checked by repair.attacks.build_attacks

    def __post_init__(self):
        if not isinstance(self.lm_eval, LmEvalSettings):  # a config section: built (and checked) here
            if not isinstance(self.lm_eval, Mapping):
                raise invalid("eval.lm_eval", self.lm_eval, "a mapping with tasks, include_path, limit")
            self.lm_eval = build(LmEvalSettings, self.lm_eval, "eval.lm_eval")

    def check(self) -> None:
        for key in ("max_new_tokens", "batch_size"):
            require(getattr(self, key) >= 1, f"eval.{key}", getattr(self, key), "an integer >= 1")
        require(self.max_samples is None or self.max_samples >= 1, "eval.max_samples", self.max_samples,
                "null (every item) or an integer >= 1")


def eval_settings(cfg: Any) -> EvalSettings:
    """The `eval` config section as checked settings (EvalSettings pass through): an unknown, missing or ill-typed
    key fails naming the valid ones."""
    return cfg if isinstance(cfg, EvalSettings) else build(EvalSettings, cfg, "eval")


def validate_eval(cfg: Any) -> EvalSettings:
    """Check the `eval` config before any slow step (the runner's entry point); `eval.attacks` is checked by
    `repair.attacks.build_attacks`."""
    return eval_settings(cfg)


def paraphrased(cfg, forget: Sequence[QA]) -> tuple[list[QA], str]:
    """The forget items scored in paraphrased form (those with a paraphrase, among the first `eval.max_samples`),
    and the protocol's note on it. Without any, there is no `*_paraphrase` metric: it would be F-RL / Acc_f again."""
    cfg = eval_settings(cfg)
    if not cfg.paraphrases:
        return [], "off: eval.paraphrases=false"
    items = _limited(forget, cfg)
    with_para = [q for q in items if q.paraphrases]
    if not with_para:
        return [], "off: the forget items have no paraphrases"
    note = "on: each forget question's first paraphrase"
    if len(with_para) < len(items):
        note += f" ({len(with_para)} of {len(items)} forget items have one; the others are left out)"
    return with_para, note


def _limited(items: Sequence[QA], cfg: EvalSettings) -> list[QA]:
    return list(items)[: cfg.max_samples] if cfg.max_samples else list(items)


def protocol(cfg, scoring: str = "rouge", forget: Sequence[QA] | None = None) -> dict:
    """How the numbers were measured; two numbers are only comparable when this matches. With the task's `forget`
    items it also says whether (and on which items) the paraphrase metrics were measured."""
    cfg = eval_settings(cfg)
    out = {"scorer": "generation", "decoding": "greedy", "max_new_tokens": cfg.max_new_tokens,
           "template": "chat", "ppl": "token-level perplexity of plain text, no template"}
    if scoring == "choice":
        out["accuracy"] = "option parsed from the generated answer (letter or unique option text); refusal = wrong"
        if cfg.loglik:
            out["accuracy_loglik"] = "lm-eval multiple_choice: log-likelihood of the option letter opening the chat answer"
    out["rouge"] = "rougeL recall, rouge-score, stemmer on"
    out["fact"] = "percent of answers containing the exact fact (e.g. the phone number), case-insensitive"
    if forget is not None:
        out["paraphrases"] = paraphrased(cfg, forget)[1]
    return out


def score_split(patient: Patient, items: Sequence[QA], split: str, cfg, paraphrase: bool = False) -> list[dict]:
    cfg = eval_settings(cfg)
    questions = [q.paraphrases[0] if paraphrase and q.paraphrases else q.question for q in items]
    answers = generate(patient, questions, cfg.max_new_tokens, cfg.batch_size, desc=f"eval {split}")
    return [score_answer(q, question, gen, split) for q, question, gen in zip(items, questions, answers)]


def score_answer(q: QA, question: str, gen: str, split: str, reference: str | None = None) -> dict:
    """One per-sample record: ROUGE-L recall against `reference` (default: the item's answer), the parsed option
    of a multiple-choice item, and whether the exact fact is in the answer."""
    reference = q.answer if reference is None else reference
    row = {"split": split, "subject": q.subject, "attribute": q.attribute, "question": question,
           "reference": reference, "generation": gen, "rouge_l_recall": rouge_l_recall(gen, reference)}
    if q.choices:
        row["choice"] = parse_choice(gen, q.choices)
        row["correct"] = row["choice"] == q.label
    if q.fact:
        row["fact_recalled"] = q.fact.lower() in gen.lower()
    return row


def evaluate(patient: Patient, task: Task, cfg) -> tuple[dict[str, float], list[dict]]:
    """Forget / retain metrics of `task` and utility perplexity. Returns (metrics, per-sample records).

    The metrics of the scored answers are those registered in `repair.metrics` for the task's scoring: free-text
    tasks give F-RL / R-RL (ROUGE-L recall), multiple-choice tasks Acc_f / Acc_r in percent, both the exact-fact
    recall where items have a fact.
    """
    if task.scoring not in SCORINGS:
        raise ValueError(f"task {task.name!r} has scoring {task.scoring!r}; valid choices: {', '.join(SCORINGS)}")
    cfg = eval_settings(cfg)

    def pick(items: Sequence[QA]) -> list[QA]:
        return _limited(items, cfg)

    records: list[dict] = []
    metrics: dict[str, float] = {}
    para_items, _ = paraphrased(cfg, task.forget)  # none: no *_paraphrase metric (it would repeat the plain one)
    for split, items, para in (("forget", pick(task.forget), False), ("retain", pick(task.retain), False),
                               ("forget_paraphrase", para_items, True)):
        if para and not items:
            continue
        rows = score_split(patient, items, split, cfg, paraphrase=para)
        records += rows
        metrics |= aggregate_rows(rows, split, task.scoring)
    if cfg.loglik and task.scoring == "choice":
        acc = choice_loglik_accuracy(patient, {"f": pick(task.forget), "r": pick(task.retain)}, cfg.batch_size)
        metrics |= {f"acc_{side}_loglik": value for side, value in acc.items()}
    if cfg.ppl and task.corpus:
        metrics["ppl"] = perplexity(patient.model, patient.tokenizer, task.corpus)
    return metrics, records


def utility_benchmarks(patient: Patient, cfg) -> dict[str, float]:
    """Optional lm-eval tasks (`eval.lm_eval.tasks`), flattened to `lm_eval/<task>/<metric>`."""
    cfg = eval_settings(cfg)
    spec = cfg.lm_eval
    if not spec.tasks:
        return {}
    results = run_lm_eval(patient, list(spec.tasks), spec.include_path, cfg.batch_size, spec.limit)
    return {f"lm_eval/{task}/{metric.split(',')[0]}": float(value) for task, scores in results.items()
            for metric, value in scores.items() if "," in metric and "stderr" not in metric
            and isinstance(value, (int, float))}  # lm-eval keys metrics as "<metric>,<filter>"
