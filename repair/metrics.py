"""Metrics: plain functions (ROUGE-L recall, TOFU's definition; perplexity) and the registry of every number a run
reports.

Each metric is registered once with what reports need to show it: its key in results.json, the split it measures,
whether lower is better, its unit, labels and digits, and, for a metric of the scored answers, how it aggregates
the per-sample rows of `repair.evaluate.score_answer`. The evaluator, the attacks, the tables and the plots read the
registry, so a new metric is one aggregation function plus one `register_metric(...)`.
"""
from __future__ import annotations

import functools
import math
import typing
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from repair.data import padding_side
from repair.registry import Registry


@functools.lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of `prediction` against `reference` (rouge-score, stemming on), in [0, 1]."""
    return float(_scorer().score(reference, prediction)["rougeL"].recall)


@torch.no_grad()
def perplexity(model, tokenizer, texts: Sequence[str], batch_size: int = 8, max_length: int = 256) -> float:
    """Token-level perplexity of plain text (no chat template): exp of the mean next-token NLL."""
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    with padding_side(tokenizer, "right"):
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                            truncation=True, max_length=max_length).to(device)
            logits = model(**enc).logits[:, :-1].float()
            targets = enc["input_ids"][:, 1:]
            mask = enc["attention_mask"][:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum")
            total_nll += float(nll)
            total_tokens += int(mask.sum())
    mean = total_nll / max(total_tokens, 1)
    return math.exp(mean) if mean < 709 else math.inf  # a broken patient: past float range, not a crash


# ------------------------------------------------------------------------------------------------ the registry
Split = Literal["forget", "retain", "utility", "cost"]
Scoring = Literal["rouge", "choice"]
SCORINGS: tuple[str, ...] = typing.get_args(Scoring)


@dataclass(frozen=True)
class Metric:
    """One number a run reports, with what every report needs to show it.

    `rows` and `aggregate` make it a metric of the scored answers: `aggregate` turns the per-sample rows of one
    scored split (`repair.evaluate.score_answer`: forget, retain, forget_paraphrase) into the value, or None where
    those rows do not measure it (no fact to recall). Without them the value is measured elsewhere (perplexity,
    log-likelihood accuracy, run time) and the registration only says how to show it."""

    name: str  # key in results.json (metrics.before / metrics.after), e.g. "f_rl"
    split: Split  # what it measures: forgetting, what must be kept, general utility, or the cost of unlearning
    lower_is_better: bool
    unit: str  # "%", "s", or "" (a ratio or a plain number)
    label: str  # Markdown, e.g. "F-RL"
    latex: str  # LaTeX, e.g. r"Acc$_f$"
    digits: int  # decimals in the results tables
    brief_digits: int  # decimals in compact reports (robustness table, benchmark printout)
    rows: str | None = None  # the scored split `aggregate` reads
    aggregate: Callable[[Sequence[dict]], float | None] | None = None
    scoring: Scoring | None = None  # only tasks of this scoring have it (None: any task)
    table: bool = True  # a column of the results tables (experiments/tables.py)
    column: str = ""  # column of the runs frame (experiments/collect.py); default after/<name>

    def __post_init__(self):
        if not self.column:
            object.__setattr__(self, "column", f"after/{self.name}")

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_is_better else "↑"

    @property
    def markdown(self) -> str:
        """Table header: label and direction, e.g. 'F-RL ↓'."""
        return f"{self.label} {self.arrow}"

    @property
    def latex_header(self) -> str:
        arrow = r"\downarrow" if self.lower_is_better else r"\uparrow"
        return f"{self.latex} ${arrow}$"

    @property
    def axis(self) -> str:
        """Plot axis name: label, percent unit, direction, e.g. 'Acc_f (%) ↓'."""
        return f"{self.label}{' (%)' if self.unit == '%' else ''} {self.arrow}"

    def brief(self, value: float) -> str:
        return f"{value:.{self.brief_digits}f}"


METRICS: Registry = Registry("metric")


def register_metric(metric: Metric) -> Metric:
    """Register `metric`: the evaluator computes it (if it aggregates scored rows), the tables show it (if
    `table`)."""
    return METRICS.register(metric.name, metric.label)(metric)


def registered() -> list[Metric]:
    """Every metric in registration order (the tables' column order)."""
    return [METRICS.get(name) for name in METRICS.in_order()]


def aggregate_rows(rows: Sequence[dict], over: str, scoring: str) -> dict[str, float]:
    """The metrics of scored rows of the split `over` (forget, retain, forget_paraphrase) for a task scored by
    `scoring`, named as in results.json, in registration order; those the rows do not measure are left out."""
    out: dict[str, float] = {}
    for metric in registered():
        if metric.rows == over and metric.aggregate is not None and metric.scoring in (None, scoring):
            value = metric.aggregate(rows)
            if value is not None:
                out[metric.name] = value
    return out


def row_scoring(rows: Sequence[dict]) -> str:
    """How scored rows were scored: multiple choice where they carry a parsed option."""
    return "choice" if rows and "correct" in rows[0] else "rouge"


def scored_metric(scoring: str, rows: str = "forget") -> Metric:
    """The score of a task's own scoring on a scored split: Acc_f / Acc_r for multiple choice, F-RL / R-RL for free
    text (the first registered)."""
    for metric in registered():
        if metric.scoring == scoring and metric.rows == rows:
            return metric
    raise ValueError(f"no {scoring} metric of the {rows} rows is registered; registered: "
                     f"{', '.join(METRICS.in_order())}")


# ------------------------------------------------------------------------------------------------ aggregations
def accuracy(rows: Sequence[dict]) -> float:
    """Percent of multiple-choice answers whose parsed option is the taught one (a refusal is wrong)."""
    return 100.0 * sum(r["correct"] for r in rows) / max(len(rows), 1)


def mean_rouge_l(rows: Sequence[dict]) -> float:
    return sum(r["rouge_l_recall"] for r in rows) / max(len(rows), 1)


def fact_recall(rows: Sequence[dict]) -> float | None:
    """Percent of answers that contain the exact fact: ROUGE-L credits the answer's template words too, this counts
    only the fact itself. None where no item has a fact."""
    facts = [r["fact_recalled"] for r in rows if "fact_recalled" in r]
    return 100.0 * sum(facts) / len(facts) if facts else None


# the paper's metrics first (their order is the tables' column order), then the secondary views
register_metric(Metric("acc_f", split="forget", lower_is_better=True, unit="%", label="Acc_f", latex=r"Acc$_f$",
                       digits=2, brief_digits=1, rows="forget", aggregate=accuracy, scoring="choice"))
register_metric(Metric("acc_r", split="retain", lower_is_better=False, unit="%", label="Acc_r", latex=r"Acc$_r$",
                       digits=2, brief_digits=1, rows="retain", aggregate=accuracy, scoring="choice"))
register_metric(Metric("f_rl", split="forget", lower_is_better=True, unit="", label="F-RL", latex="F-RL",
                       digits=3, brief_digits=3, rows="forget", aggregate=mean_rouge_l, scoring="rouge"))
register_metric(Metric("r_rl", split="retain", lower_is_better=False, unit="", label="R-RL", latex="R-RL",
                       digits=3, brief_digits=3, rows="retain", aggregate=mean_rouge_l, scoring="rouge"))
register_metric(Metric("f_fact", split="forget", lower_is_better=True, unit="%", label="F-fact", latex="F-fact",
                       digits=2, brief_digits=1, rows="forget", aggregate=fact_recall, table=False))
register_metric(Metric("r_fact", split="retain", lower_is_better=False, unit="%", label="R-fact", latex="R-fact",
                       digits=2, brief_digits=1, rows="retain", aggregate=fact_recall, table=False))
# the forget questions in paraphrased form (repair.evaluate.paraphrased)
register_metric(Metric("acc_f_paraphrase", split="forget", lower_is_better=True, unit="%", label="Acc_f para",
                       latex=r"Acc$_f$ para", digits=2, brief_digits=1, rows="forget_paraphrase", aggregate=accuracy,
                       scoring="choice", table=False))
register_metric(Metric("f_rl_paraphrase", split="forget", lower_is_better=True, unit="", label="F-RL para",
                       latex="F-RL para", digits=3, brief_digits=3, rows="forget_paraphrase", aggregate=mean_rouge_l,
                       scoring="rouge", table=False))
register_metric(Metric("f_fact_paraphrase", split="forget", lower_is_better=True, unit="%", label="F-fact para",
                       latex="F-fact para", digits=2, brief_digits=1, rows="forget_paraphrase",
                       aggregate=fact_recall, table=False))
# measured by the evaluator itself (repair.evaluate.evaluate), not from scored rows
register_metric(Metric("acc_f_loglik", split="forget", lower_is_better=True, unit="%", label="Acc_f loglik",
                       latex=r"Acc$_f$ loglik", digits=2, brief_digits=1, scoring="choice", table=False))
register_metric(Metric("acc_r_loglik", split="retain", lower_is_better=False, unit="%", label="Acc_r loglik",
                       latex=r"Acc$_r$ loglik", digits=2, brief_digits=1, scoring="choice", table=False))
register_metric(Metric("ppl", split="utility", lower_is_better=True, unit="", label="PPL", latex="PPL", digits=2,
                       brief_digits=1))
# the unlearning wall clock (results.json runtime_s.unlearn)
register_metric(Metric("time", split="cost", lower_is_better=True, unit="s", label="Time (s)", latex="Time (s)",
                       digits=2, brief_digits=1, column="runtime_s/unlearn"))
