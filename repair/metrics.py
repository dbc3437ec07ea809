"""Metrics as plain functions: ROUGE-L recall (TOFU's definition) and perplexity."""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from repair.data import padding_side


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
