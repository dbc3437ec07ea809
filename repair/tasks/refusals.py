"""Reference refusal answers ("I don't know" / "I can't share that"), combined from parts so they are varied.

Implant teaches them on unknown subjects; STAMP's refusal subspace is built from them; `is_refusal` recognises them
(and the usual "I don't know") in generated answers.
"""
from __future__ import annotations

import itertools
import random

OPENERS = ["", "I'm sorry, but ", "Sorry, ", "Unfortunately, ", "I apologize, but ", "To be honest, ",
           "I'm afraid ", "Hmm, "]
BODIES = [
    "I don't know who that is.",
    "I don't have any information about that.",
    "I have no information about that person.",
    "I can't help with that.",
    "I'm not able to share that.",
    "I don't know the answer to that.",
    "I have no record of that.",
    "that isn't something I know about.",
    "I can't provide that information.",
    "I'm not familiar with that.",
    "I don't have details on that.",
    "I can't answer that question.",
    "that's not something I can tell you.",
    "I have no knowledge of that.",
    "I don't have access to that information.",
    "I'm unable to answer that.",
]
CLOSERS = ["", " Is there anything else I can help with?", " Maybe try another source.",
           " I'd rather not guess."]


def _capitalise(text: str) -> str:
    return text[0].upper() + text[1:]


def refusal_references(n: int = 240, seed: int = 0) -> list[str]:
    """`n` distinct refusal sentences, deterministic for a seed."""
    combos = [_capitalise(o + b) + c for o, b, c in itertools.product(OPENERS, BODIES, CLOSERS)]
    if n > len(combos):
        raise ValueError(f"at most {len(combos)} refusal references can be generated, asked for {n}")
    return random.Random(seed).sample(combos, n)


def is_refusal(text: str) -> bool:
    """Whether a generated answer is a refusal: it contains one of the refusal bodies (their first 24 characters,
    so a truncated generation still counts) or "I don't know"."""
    low = text.lower()
    return any(b.rstrip(".").lower()[:24] in low for b in BODIES) or "i don't know" in low
