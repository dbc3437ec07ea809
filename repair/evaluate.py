"""Batched greedy generation and scoring → a metrics dict plus per-sample records. The evaluator never edits."""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from repair.data import chat_prompt, padding_side
from repair.loglik import choice_loglik_accuracy, run_lm_eval
from repair.metrics import perplexity, rouge_l_recall
from repair.patient import Patient
from repair.progress import progress
from repair.tasks import QA, Task
from repair.tasks.choice import parse_choice

log = logging.getLogger(__name__)


@torch.no_grad()
def generate(patient: Patient, questions: Sequence[str], max_new_tokens: int = 48, batch_size: int = 16,
             desc: str = "generate") -> list[str]:
    """Greedy answers to chat questions, batched with left padding."""
    return generate_prompts(patient, [chat_prompt(patient.tokenizer, q) for q in questions], max_new_tokens,
                            batch_size, desc)


@torch.no_grad()
def generate_prompts(patient: Patient, prompts: Sequence[str], max_new_tokens: int = 48, batch_size: int = 16,
                     desc: str = "generate") -> list[str]:
    """Greedy continuations of fully formatted prompts (multi-turn chats, prefilled answers), left-padded."""
    tok, model = patient.tokenizer, patient.model
    answers: list[str] = []
    with padding_side(tok, "left"):
        for start in progress(range(0, len(prompts), batch_size), desc=desc, disable=len(prompts) <= batch_size):
            enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(patient.device)
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
            answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [a.strip() for a in answers]


SCORINGS = ("rouge", "choice")


def protocol(cfg, scoring: str = "rouge") -> dict:
    """How the numbers were measured; two numbers are only comparable when this matches."""
    out = {"scorer": "generation", "decoding": "greedy", "max_new_tokens": int(cfg.max_new_tokens),
           "template": "chat", "ppl": "token-level perplexity of plain text, no template"}
    if scoring == "choice":
        out["accuracy"] = "option parsed from the generated answer (letter or unique option text); refusal = wrong"
        if cfg.get("loglik"):
            out["accuracy_loglik"] = "lm-eval multiple_choice: log-likelihood of the option letter opening the chat answer"
    out["rouge"] = "rougeL recall, rouge-score, stemmer on"
    out["fact"] = "percent of answers containing the exact fact (e.g. the phone number), case-insensitive"
    return out


def score_split(patient: Patient, items: Sequence[QA], split: str, cfg, paraphrase: bool = False) -> list[dict]:
    questions = [q.paraphrases[0] if paraphrase and q.paraphrases else q.question for q in items]
    answers = generate(patient, questions, int(cfg.max_new_tokens), int(cfg.batch_size), desc=f"eval {split}")
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

    Free-text tasks give F-RL / R-RL (ROUGE-L recall); multiple-choice tasks give Acc_f / Acc_r in percent.
    """
    if task.scoring not in SCORINGS:
        raise ValueError(f"task {task.name!r} has scoring {task.scoring!r}; valid choices: {', '.join(SCORINGS)}")
    limit = cfg.get("max_samples")
    pick = (lambda xs: list(xs)[: int(limit)]) if limit else list
    records: list[dict] = []
    metrics: dict[str, float] = {}
    for side, split, items, para in (("f", "forget", task.forget, False), ("r", "retain", task.retain, False),
                                     ("f", "forget_paraphrase", task.forget, True)):
        if para and not cfg.get("paraphrases", True):
            continue
        rows = score_split(patient, pick(items), split, cfg, paraphrase=para)
        records += rows
        suffix = "_paraphrase" if para else ""
        if task.scoring == "choice":
            metrics[f"acc_{side}{suffix}"] = 100.0 * sum(r["correct"] for r in rows) / max(len(rows), 1)
        else:
            metrics[f"{side}_rl{suffix}"] = sum(r["rouge_l_recall"] for r in rows) / max(len(rows), 1)
        facts = [r["fact_recalled"] for r in rows if "fact_recalled" in r]
        if facts:  # ROUGE-L credits the answer's template words too; this counts only the fact itself
            metrics[f"{side}_fact{suffix}"] = 100.0 * sum(facts) / len(facts)
    if cfg.get("loglik") and task.scoring == "choice":
        acc = choice_loglik_accuracy(patient, {"f": pick(task.forget), "r": pick(task.retain)}, int(cfg.batch_size))
        metrics |= {f"acc_{side}_loglik": value for side, value in acc.items()}
    if cfg.get("ppl", True) and task.corpus:
        metrics["ppl"] = perplexity(patient.model, patient.tokenizer, task.corpus)
    return metrics, records


def utility_benchmarks(patient: Patient, cfg) -> dict[str, float]:
    """Optional lm-eval tasks (`eval.lm_eval.tasks`), flattened to `lm_eval/<task>/<metric>`."""
    spec = cfg.get("lm_eval") or {}
    if not spec.get("tasks"):
        return {}
    results = run_lm_eval(patient, list(spec["tasks"]), spec.get("include_path"), int(cfg.batch_size),
                          spec.get("limit"))
    return {f"lm_eval/{task}/{metric.split(',')[0]}": float(value) for task, scores in results.items()
            for metric, value in scores.items() if "," in metric and "stderr" not in metric
            and isinstance(value, (int, float))}  # lm-eval keys metrics as "<metric>,<filter>"
