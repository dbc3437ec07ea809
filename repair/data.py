"""Turn QA items into token batches with the patient's chat template; the loss is on answer tokens only."""
from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from repair.architectures import head_logits
from repair.tasks import QA


def chat_prompt(tokenizer, question: str) -> str:
    """The question as the patient sees it at inference: chat template with the assistant turn opened."""
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)


@contextlib.contextmanager
def padding_side(tokenizer, side: str):
    """Pad on `side` inside the block (left for generation and next-token logits, right for scoring), then restore."""
    before, tokenizer.padding_side = tokenizer.padding_side, side
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = before


def answer_suffix(tokenizer) -> str:
    """What closes an assistant turn in this template (e.g. `<|im_end|>`), so the patient learns to stop."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": "ANSWER"}],
                                         tokenize=False)
    tail = text.split("ANSWER", 1)[1]
    return tail.rstrip("\n") or (tokenizer.eos_token or "")


def encode(tokenizer, items: Sequence[QA], max_length: int = 128) -> list[dict[str, list[int]]]:
    """input_ids and labels (prompt masked with -100) for each item."""
    suffix = answer_suffix(tokenizer)
    out = []
    for item in items:
        prompt = tokenizer(chat_prompt(tokenizer, item.question), add_special_tokens=False)["input_ids"]
        answer = tokenizer(item.answer + suffix, add_special_tokens=False)["input_ids"]
        ids = (prompt + answer)[:max_length]
        labels = ([-100] * len(prompt) + answer)[:max_length]
        out.append({"input_ids": ids, "labels": labels})
    return out


def collate(examples: Iterable[dict[str, list[int]]], pad_id: int, device: torch.device | str = "cpu"):
    """Right-padded batch for training (generation uses left padding instead)."""
    examples = list(examples)
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def answer_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at the positions that predict labelled tokens (num_answer_tokens × vocab, float32), those tokens, and
    the row each belongs to.

    The vocabulary projection is applied only at answer positions: on a 49k-token vocabulary that is most of
    the cost of a small patient's step.
    """
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    rows = torch.nonzero(keep, as_tuple=True)[0]
    return head_logits(model, hidden[:, :-1][keep]).float(), targets[keep], rows


def answer_token_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the answer tokens, as a (num_answer_tokens,) vector plus the row each belongs to."""
    logits, targets, rows = answer_logits(model, batch)
    return -F.cross_entropy(logits, targets, reduction="none"), rows


def answer_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood of each row's answer tokens: shape (batch,)."""
    logprobs, rows = answer_token_logprobs(model, batch)
    n = batch["input_ids"].shape[0]
    total = torch.zeros(n, device=logprobs.device).index_add(0, rows, -logprobs)
    count = torch.zeros(n, device=logprobs.device).index_add(0, rows, torch.ones_like(logprobs))
    return total / count.clamp(min=1)
