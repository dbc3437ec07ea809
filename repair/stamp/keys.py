"""Where STAMP reads its keys: the prompts and token positions of the forget request, and the keys held in place
(retain buffer, contrast questions, generic text) with their Gram, cached where they do not depend on the request.

Keys are the down projection's inputs at chosen token positions (repair/refusal.py `activations_at`). With
`keys: answer_start` a forget key is the last prompt token, where the answer begins; with `keys: subject` it is the
last `span_tokens` tokens of the subject's name.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from repair.data import chat_prompt
from repair.patient import Patient
from repair.progress import Phases
from repair.refusal import activations_at, token_positions
from repair.stamp.settings import StampSettings
from repair.stamp.solve import held_gram
from repair.tasks import QA
from repair.tasks.choice import stem, with_options
from repair.tasks.corpus import GENERAL_QUESTIONS

Prompts = tuple[list[str], list[list[int]]]  # fully formatted prompts and the key positions in each


@dataclass
class References:
    """Task-level references (taken by `Stamp.prepare`): subjects the patient was taught to refuse, fresh subjects of
    the task's kind for contrasts (`Task.subject_pool`), and ordinary text to hold in place."""

    unknown_subjects: list[str] = field(default_factory=list)
    subject_pool: list[str] = field(default_factory=list)
    generic_texts: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, task) -> "References":
        return cls(sorted({q.subject for q in task.idk if q.subject}), list(getattr(task, "subject_pool", [])),
                   list(task.corpus))


class KeyCache:
    """Held keys that do not depend on the forget request (generic text, the retain buffer, its contrasts), computed
    once per patient, layers and buffer. Taken on the weights at first use: a later request in a chat session sees
    them as they were before earlier edits, a small approximation that keeps one edit fast."""

    def __init__(self):
        self._entries: dict[tuple, Any] = {}

    def get(self, kind: str, patient: Patient, layers: Sequence[int], extra: tuple, build: Callable[[], Any]):
        key = (kind, patient.name, id(patient.model), tuple(layers), extra)
        if key not in self._entries:
            self._entries[key] = build()
        return self._entries[key]


def fresh_unknown_subjects(n: int, seed: int) -> list[str]:
    """Made-up names for when the task supplies no subjects the patient was taught to refuse."""
    from repair.tasks.pii import make_profiles

    return [p.name for p in make_profiles(n, random.Random(10_000 + seed))]


def subject_spans(patient: Patient, items: Sequence[QA], subjects: Sequence[str], span_tokens: int) -> Prompts:
    """Chat prompts and the positions of the last `span_tokens` tokens of each subject in them."""
    texts = [chat_prompt(patient.tokenizer, q.question) for q in items]
    return texts, [token_positions(patient.tokenizer, t, s or None, last=span_tokens) for t, s in zip(texts, subjects)]


def answer_starts(patient: Patient, questions: Sequence[str]) -> Prompts:
    """Chat prompts and, for each, the position of its last token: where the first answer token is chosen."""
    texts = [chat_prompt(patient.tokenizer, q) for q in questions]
    return texts, [token_positions(patient.tokenizer, t, last=1) for t in texts]


def forget_prompts(patient: Patient, settings: StampSettings, forget: Sequence[QA]) -> Prompts:
    """The forget request's prompts and key positions."""
    if settings.keys == "answer_start":
        return answer_starts(patient, [q.question for q in forget])
    unnamed = [q.question[:60] for q in forget if not q.subject or q.subject not in q.question]
    if unnamed:
        raise ValueError(f"method.keys=subject needs forget questions that name their subject; "
                         f"{len(unnamed)} do not (e.g. {unnamed[0]!r}); use method.keys=answer_start")
    return subject_spans(patient, forget, [q.subject for q in forget], settings.span_tokens)


def held_retain(patient: Patient, settings: StampSettings, items: Sequence[QA]) -> Prompts:
    """Retain-buffer positions held in place: the subject span, or (answer_start) every prompt and answer token,
    since an answer-start edit could otherwise fire in the middle of a retain answer."""
    if settings.keys == "subject":
        return subject_spans(patient, items, [q.subject for q in items], settings.span_tokens)
    texts = [chat_prompt(patient.tokenizer, q.question) + q.answer for q in items]
    return texts, [token_positions(patient.tokenizer, t) for t in texts]


def contrasts(patient: Patient, settings: StampSettings, templates: Sequence[QA], refs: References,
              avoid: frozenset[str] = frozenset()) -> Prompts | None:
    """Questions of the forget questions' form about *other* subjects, held at the answer start: the edit must
    then key on what is specific to the forget subject, not on the question's format (measured: without them
    every multiple-choice question of `harmful` was refused). The forms are the retain buffer's questions (the
    same templates as the forget set's in the built-in suites, and the same for every request, so their keys
    are cached: `contrast_source: buffer`, fast) or the forget questions themselves (`forget`, the default:
    measured to keep more retain answers, docs/stamp.md). Each contrast takes the next subject of a pool (the
    buffer's, the refused ones, made-up ones: more distinct subjects kept more retain answers, docs/stamp.md)
    and, for multiple choice, options re-drawn from the templates' options of the same attribute. Where the
    subject is the whole question (`misinformation`) or is not named in it (WMDP, MMLU, TOFU, JSONL without
    subjects), the question stem is swapped for another question, options block and instruction kept. Made-up
    subjects come from the task's own generator (`Task.subject_pool`: fresh pathogens for `harmful`, not person
    names). The first `contrast_neighbours` share of each template's contrasts takes the subjects whose tokens
    overlap the forget subject's most ("Nalwexian blight" for "Nalzanian plague"): the answer-start key carries the
    subject through its subword tokens, and the retain questions an edit reached most were about such
    look-alikes (docs/stamp.md)."""
    n = settings.contrast_prompts
    if n <= 0 or not templates:
        return None
    rng = random.Random(settings.seed)
    whole = [subject_is_question(q) for q in templates]
    pools: dict[bool, list[str]] = {}
    if not all(whole):  # other subjects in the same question
        own = [q.subject for q, w in zip(templates, whole) if not w]
        extra = refs.subject_pool or fresh_unknown_subjects(n, settings.seed)
        pools[False] = [s for s in dict.fromkeys([*own, *refs.unknown_subjects, *extra]) if s not in avoid]
    if any(whole):  # other questions in the same form (options block, instruction)
        own = [stem(q.question, q.choices) for q, w in zip(templates, whole) if w]
        pools[True] = [s for s in dict.fromkeys([*own, *refs.unknown_subjects, *GENERAL_QUESTIONS]) if s not in avoid]
    options: dict[str, list[str]] = {}
    for q in templates:
        options.setdefault(q.attribute, []).extend(c for c in q.choices if c not in options[q.attribute])
    near = round(settings.contrast_neighbours * -(-n // len(templates)))
    ranked: dict[str, list[str]] = {}
    questions = []
    for i in range(n):
        j, k = i % len(templates), i // len(templates)  # the k-th contrast of template j
        q = templates[j]
        own = stem(q.question, q.choices) if whole[j] else q.subject
        others = [s for s in pools[whole[j]] if s != own]
        if k < near and not whole[j] and own not in ranked:
            ranked[own] = nearest(patient.tokenizer, own, others)
        other = ranked[own][k] if k < near and not whole[j] else others[(k + i) % len(others)]
        text = q.question.replace(own, other, 1 if whole[j] else -1)
        if q.choices and len(options[q.attribute]) >= len(q.choices):
            text = with_options(text, q.choices, rng.sample(options[q.attribute], len(q.choices)))
        questions.append(text)
    return answer_starts(patient, questions)


def counterfactuals(patient: Patient, settings: StampSettings, forget: Sequence[QA], positions: list[list[int]],
                    refs: References) -> Prompts:
    """The forget prompts with the subject swapped for one the patient refuses; spans aligned from the end (the
    forget `positions` are trimmed in place to match)."""
    pool = refs.unknown_subjects or fresh_unknown_subjects(8, settings.seed)
    swapped = [dataclasses.replace(q, question=q.question.replace(q.subject, pool[i % len(pool)]))
               for i, q in enumerate(forget)]
    texts, cf_positions = subject_spans(patient, swapped, [pool[i % len(pool)] for i in range(len(forget))],
                                        settings.span_tokens)
    for i, (p, c) in enumerate(zip(positions, cf_positions)):
        n = min(len(p), len(c))
        positions[i], cf_positions[i] = p[-n:], c[-n:]
    return texts, cf_positions


def generic_keys(patient: Patient, layers: list[int], refs: References, cache: KeyCache, phase: Phases):
    """Keys of ordinary questions and text at every token."""
    def build():
        with phase("generic_keys"):
            texts = [chat_prompt(patient.tokenizer, q) for q in GENERAL_QUESTIONS] + refs.generic_texts[:16]
            return activations_at(patient, texts, [token_positions(patient.tokenizer, t) for t in texts], layers)
    return cache.get("generic", patient, layers, (len(refs.generic_texts),), build)


def held_system(patient: Patient, settings: StampSettings, layers: list[int], forget: Sequence[QA],
                retain_buffer: Sequence[QA], refs: References, cache: KeyCache, phase: Phases
                ) -> dict[int, dict]:
    """Per layer: the Gram of every held key (retain buffer, contrasts, generic text), and the retain and contrast
    keys with their outputs' norm (to report how far the edit moves them). The part that does not depend on the
    forget request is computed once per patient, layers and buffer (`KeyCache`); contrasts made from the forget
    questions are added per request. Each part is timed as its own `phase`."""
    readout = settings.target == "refusal_readout"
    n_contrasts = settings.contrast_prompts if readout else 0
    from_buffer = bool(retain_buffer) and settings.contrast_source == "buffer"
    w_r, w_x, lam = settings.retain_weight, settings.contrast_weight, settings.cov_weight

    def build():
        r_acts = x_acts = None
        if retain_buffer:
            with phase("buffer_keys"):
                r_acts = activations_at(patient, *held_retain(patient, settings, retain_buffer), layers)
        if from_buffer and n_contrasts:
            with phase("contrast_keys"):
                x_prompts = contrasts(patient, settings, retain_buffer, refs)
                x_acts = activations_at(patient, *x_prompts, layers) if x_prompts else None
        c_acts = generic_keys(patient, layers, refs, cache, phase) if lam > 0 else None
        with phase("held_gram"):
            return gram_per_layer(r_acts, x_acts, c_acts)

    def gram_per_layer(r_acts, x_acts, c_acts):
        out = {}
        for layer in layers:
            parts = ([(r_acts[layer], w_r)] if r_acts else []) + ([(x_acts[layer], w_x)] if x_acts else [])
            m = patient.module("mlp_down", layer).weight.shape[1]
            keys = torch.cat([w ** 0.5 * k for (k, _), w in parts]) if parts else torch.zeros(0, m).double()
            values = torch.cat([w ** 0.5 * v for (_, v), w in parts]) if parts else torch.zeros(0).double()
            k_c = c_acts[layer][0] if c_acts else keys[:0]
            out[layer] = {"gram": held_gram(keys, k_c, 1.0, lam), "keys": keys,
                          "values_sq": float(values.norm()) ** 2, "generic_keys": int(len(k_c))}
        return out

    weights = (w_r, w_x, lam, n_contrasts if from_buffer else 0)
    static = cache.get("held", patient, layers, (tuple(q.question for q in retain_buffer), weights), build)
    if from_buffer or not n_contrasts:
        return {l: {**h, "static": h} for l, h in static.items()}
    avoid = frozenset(q.subject for q in forget) | {stem(q.question, q.choices) for q in forget}
    with phase("contrast_keys"):
        x_acts = activations_at(patient, *contrasts(patient, settings, forget, refs, avoid), layers)
    with phase("held_gram"):
        return {layer: add_contrasts(h, *x_acts[layer], w_x) for layer, h in static.items()}


def add_contrasts(h: dict, k_x: torch.Tensor, v_x: torch.Tensor, w_x: float) -> dict:
    """A layer's held system with one request's contrast keys added (the static part stays as cached)."""
    return {**h, "static": h, "gram": h["gram"] + w_x * k_x.T @ k_x, "keys": torch.cat([h["keys"], w_x ** 0.5 * k_x]),
            "values_sq": h["values_sq"] + w_x * float(v_x.norm()) ** 2}


def subject_is_question(q: QA) -> bool:
    """Whether a contrast of `q` must be another question: its subject is the question itself (`misinformation`),
    or is not named in it (real benchmarks: no subject, or a group label such as a TOFU author)."""
    question = stem(q.question, q.choices)
    return not q.subject or q.subject == question or q.subject not in question


def nearest(tokenizer, subject: str, pool: Sequence[str]) -> list[str]:
    """`pool` ordered by how many subword tokens each subject shares with `subject` (most first; stable)."""
    def tokens(s: str) -> set[int]:
        return set(tokenizer(" " + s, add_special_tokens=False)["input_ids"])
    own = tokens(subject)
    return sorted(pool, key=lambda s: -len(own & tokens(s)))
