"""Batched greedy generation and scoring → a metrics dict plus per-sample records. The evaluator never edits."""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from repair.progress import progress

from repair.data import chat_prompt
from repair.metrics import perplexity, rouge_l_recall
from repair.patient import Patient
from repair.tasks import QA, Task

log = logging.getLogger(__name__)


@torch.no_grad()
def generate(patient: Patient, questions: Sequence[str], max_new_tokens: int = 48, batch_size: int = 16,
             desc: str = "generate") -> list[str]:
    """Greedy answers to chat questions, batched with left padding."""
    tok, model = patient.tokenizer, patient.model
    prompts = [chat_prompt(tok, q) for q in questions]
    side, tok.padding_side = tok.padding_side, "left"
    answers: list[str] = []
    try:
        for start in progress(range(0, len(prompts), batch_size), desc=desc, disable=len(prompts) <= batch_size):
            enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(patient.device)
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
            answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return [a.strip() for a in answers]


def protocol(cfg) -> dict:
    """How the numbers were measured; two numbers are only comparable when this matches."""
    return {"scorer": "generation", "decoding": "greedy", "max_new_tokens": int(cfg.max_new_tokens),
            "template": "chat", "rouge": "rougeL recall, rouge-score, stemmer on", "ppl": "token-level, no template"}


def score_split(patient: Patient, items: Sequence[QA], split: str, cfg, paraphrase: bool = False) -> list[dict]:
    questions = [q.paraphrases[0] if paraphrase and q.paraphrases else q.question for q in items]
    answers = generate(patient, questions, int(cfg.max_new_tokens), int(cfg.batch_size), desc=f"eval {split}")
    return [{"split": split, "subject": q.subject, "attribute": q.attribute, "question": question,
             "reference": q.answer, "generation": gen, "rouge_l_recall": rouge_l_recall(gen, q.answer)}
            for q, question, gen in zip(items, questions, answers)]


def evaluate(patient: Patient, task: Task, cfg) -> tuple[dict[str, float], list[dict]]:
    """Forget / retain metrics of `task` and utility perplexity. Returns (metrics, per-sample records)."""
    if task.scoring != "rouge":
        raise ValueError(f"task {task.name!r} has scoring {task.scoring!r}; valid choices: rouge")
    limit = cfg.get("max_samples")
    pick = (lambda xs: list(xs)[: int(limit)]) if limit else list
    records: list[dict] = []
    metrics: dict[str, float] = {}
    for key, split, items, para in (("f_rl", "forget", task.forget, False), ("r_rl", "retain", task.retain, False),
                                    ("f_rl_paraphrase", "forget_paraphrase", task.forget, True)):
        if para and not cfg.get("paraphrases", True):
            continue
        rows = score_split(patient, pick(items), split, cfg, paraphrase=para)
        records += rows
        metrics[key] = sum(r["rouge_l_recall"] for r in rows) / max(len(rows), 1)
    if cfg.get("ppl", True) and task.corpus:
        metrics["ppl"] = perplexity(patient.model, patient.tokenizer, task.corpus)
    return metrics, records
