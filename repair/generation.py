"""Greedy generation from the patient: the one forward-pass loop below both the evaluator and the editors (STAMP's
answer check, the implant's utility answers, the chat), so an editor never imports the evaluator."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from repair.data import chat_prompt, padding_side
from repair.patient import Patient
from repair.progress import progress


@torch.no_grad()
def generate(patient: Patient, questions: Sequence[str], max_new_tokens: int = 48, batch_size: int = 16,
             desc: str = "generate") -> list[str]:
    """Greedy answers to chat questions, batched with left padding."""
    return generate_prompts(patient, [chat_prompt(patient.tokenizer, q) for q in questions], max_new_tokens,
                            batch_size, desc)


class Decided(StoppingCriteria):
    """Ends each row of a batch as soon as `decided(index of its prompt, text so far)` holds, and the batch when
    every row has: a check that only needs to know whether an answer opens with a refusal reads those tokens, not
    `max_new_tokens` of them."""

    def __init__(self, tokenizer, prompt_length: int, first: int, decided: Callable[[int, str], bool]):
        self.tokenizer, self.prompt_length, self.first, self.decided = tokenizer, prompt_length, first, decided

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([self.decided(self.first + i, t.strip()) for i, t in enumerate(texts)],
                            dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate_prompts(patient: Patient, prompts: Sequence[str], max_new_tokens: int = 48, batch_size: int = 16,
                     desc: str = "generate", decided: Callable[[int, str], bool] | None = None) -> list[str]:
    """Greedy continuations of fully formatted prompts (multi-turn chats, prefilled answers), left-padded. With
    `decided`, a row stops as soon as `decided(i, answer so far)` holds for its prompt i (`Decided`)."""
    tok, model = patient.tokenizer, patient.model
    answers: list[str] = []
    with padding_side(tok, "left"):
        for start in progress(range(0, len(prompts), batch_size), desc=desc, disable=len(prompts) <= batch_size):
            enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(patient.device)
            stop = StoppingCriteriaList([Decided(tok, enc["input_ids"].shape[1], start, decided)]) if decided else None
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, stopping_criteria=stop,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
            answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [a.strip() for a in answers]
