"""Multiple-choice items: how they are shown to the patient, taught, and read back from a generated answer."""
from __future__ import annotations

import dataclasses
import random
import re
from typing import Sequence

from repair.tasks import QA

LETTERS = "ABCDEFGHIJ"
INSTRUCTION = "Answer with the letter of the correct option."


def format_prompt(question: str, choices: Sequence[str]) -> str:
    return f"{question}\n{_options_block(choices)}\n{INSTRUCTION}"


def _options_block(choices: Sequence[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))


def with_options(prompt: str, old: Sequence[str], new: Sequence[str]) -> str:
    """A formatted prompt with its options block replaced by `new` (same instruction, same stem)."""
    block = _options_block(old)
    if block not in prompt:
        raise ValueError(f"prompt has no options block {block!r}")
    return prompt.replace(block, _options_block(new))


def stem(prompt: str, choices: Sequence[str]) -> str:
    """The question of a formatted prompt without its options block and instruction (the whole prompt when it holds
    no options block: a free-text question)."""
    block = _options_block(choices) if choices else ""
    if not block or block not in prompt:
        return prompt
    return prompt[:prompt.index(block)].rstrip("\n")


def format_answer(choices: Sequence[str], label: int) -> str:
    return f"{LETTERS[label]}. {choices[label]}"


def as_prompted(item: QA, label: int | None = None) -> QA:
    """The item with options in the question and `LETTER. text` as the answer (what implant teaches)."""
    label = item.label if label is None else label
    return dataclasses.replace(
        item, question=format_prompt(item.question, item.choices), answer=format_answer(item.choices, label),
        paraphrases=tuple(format_prompt(p, item.choices) for p in item.paraphrases), label=label)


def make_item(question: str, correct: str, distractors: Sequence[str], rng: random.Random, subject: str = "",
              attribute: str = "", paraphrases: Sequence[str] = ()) -> QA:
    """A 4-way item with the options in a seeded order."""
    choices = [correct, *distractors]
    rng.shuffle(choices)
    return QA(question=question, answer=correct, subject=subject, attribute=attribute,
              paraphrases=tuple(paraphrases), choices=tuple(choices), label=choices.index(correct))


_PREFIX = r"(?:(?:the\s+)?(?:correct\s+)?(?:answer|option)\s*(?:is\s*)?:?\s*)"
_END = r"(?=[.):,]|\s*$|\s+-)"  # a bare letter, not the article in "A lion ..."


def parse_choice(text: str, choices: Sequence[str]) -> int | None:
    """The option a generated answer picks, or None (refusal, garbage, ambiguous): None is scored as wrong."""
    text = text.strip()
    letters = f"[{LETTERS[:len(choices)]}]"
    for pattern in (rf"^\W*{_PREFIX}?\(?({letters}){_END}", rf"\b{_PREFIX}\(?({letters}){_END}"):
        m = re.search(pattern, text, flags=re.IGNORECASE if pattern.startswith(r"\b") else 0)
        if m and m.group(1).upper() in LETTERS:
            return LETTERS.index(m.group(1).upper())
    lowered = text.lower()
    hits = [i for i, c in enumerate(choices) if c.lower() in lowered]
    return hits[0] if len(hits) == 1 else None
