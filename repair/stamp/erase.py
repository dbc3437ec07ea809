"""Erasing a fact's recall, not only the refusal's opening (`method.erase`).

The answer-start edit makes the patient *open* with a refusal; the fact is still recalled wherever the answer gets
past that opening (a prefilled "Saskia Jorgensen lives at", measured: the unedited patient's 62.5 % back). So the
erase adds keys where the fact is produced: in the teacher-forced reference answer, the token that predicts the
fact's first token ("… lives at" → "92"; `erase_positions: all`: every fact token). Their target is what the patient computes at the same
positions for subjects it never knew (the task's refused subjects, then its subject pool: never its holdout, which
the attacks read): the edit maps "knows X" states to "does not know X" states, and holds those references in place.
Each fact's push is calibrated until the fact is no longer the greedy continuation (`erase_goal: gap`), or until its
NLL under teacher forcing reaches the references' NLL of the same fact less `erase_margin` (`nll`).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Sequence

import torch

from repair.data import chat_prompt, padding_side
from repair.patient import Patient
from repair.refusal import activations_at
from repair.stamp.keys import References, fresh_unknown_subjects
from repair.stamp.replay import LowerLayers
from repair.stamp.settings import StampSettings
from repair.tasks import QA

log = logging.getLogger(__name__)


@dataclass
class Erasure:
    """One request's erase: the forget items with a fact, their keys and targets per layer, the references' keys held
    in place, and the likelihoods the calibration aims for."""

    items: list[QA]
    texts: list[str]  # per item: the question with its reference answer
    positions: list[list[int]]  # per item: the positions that produce its fact (what the calibration measures)
    owner: list[int]  # per erase key, the index of its item
    keys: dict[int, torch.Tensor]  # per layer: forget keys at the fact-producing positions (n_e × m)
    targets: dict[int, torch.Tensor]  # per layer: the references' mean output there minus the forget output (n_e × d)
    held: dict[int, tuple[torch.Tensor, torch.Tensor]]  # per layer: the references' keys and outputs, held in place
    reference_nll: list[float]  # per item: their mean NLL of the fact, the level the calibration aims for
    before: tuple[list[float], list[float]]  # per item: the fact's NLL and first-token gap before the edit
    buffer_texts: list[str]  # the retain buffer's facts, checked as the push grows
    buffer_positions: list[list[int]]
    buffer_gaps: list[float]  # their first-token gaps before the edit (< 0: given greedily)
    lower: LowerLayers | None = None  # what the layers below the edit output on the forget and buffer facts


def fact_positions(tokenizer, text: str, start: int, end: int) -> list[int]:
    """Positions of the tokens that predict a token of `text[start:end]` (each one's predecessor)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [i - 1 for i in range(1, len(offsets)) if offsets[i][0] < end and offsets[i][1] > start]


def teacher_forced(tokenizer, q: QA, first: bool = False) -> tuple[str, list[int]]:
    """The question with its reference answer, and the positions that produce the fact (`first`: its first token)."""
    prompt = chat_prompt(tokenizer, q.question)
    start = len(prompt) + q.answer.rfind(q.fact)
    positions = fact_positions(tokenizer, prompt + q.answer, start, start + len(q.fact))
    return prompt + q.answer, positions[:1] if first else positions


def swap_subject(q: QA, other: str) -> QA:
    """The same question and answer about `other`; the fact stays as it is."""
    return dataclasses.replace(q, question=q.question.replace(q.subject, other),
                               answer=q.answer.replace(q.subject, other), subject=other, paraphrases=())


def reference_subjects(refs: References, n: int, avoid: set[str], seed: int) -> list[str]:
    """Subjects the patient does not know: those it was taught to refuse, then the task's subject pool (made up)."""
    pool = [s for s in dict.fromkeys([*refs.unknown_subjects, *refs.subject_pool]) if s not in avoid]
    return (pool or fresh_unknown_subjects(n, seed))[:n]


CHOICE_OPENERS = ("The answer is", "Answer:")  # the edit's own; never the prompting attack's `choice_prefix`


def erasable(items: Sequence[QA]) -> list[QA]:
    """Items with a fact to erase about a subject the question names. A free-text answer's fact (pii) is erased where
    the reference answer produces it; a multiple-choice answer's fact is its option letter, erased where it would
    follow an answer opening of the edit's own (`CHOICE_OPENERS`, one item each). Items without either: nothing."""
    out = []
    for q in items:
        if not q.subject or q.subject not in q.question:
            continue
        if q.fact and q.fact in q.answer and q.subject not in q.fact:
            out.append(q)
        elif q.choices and 0 <= q.label < len(q.choices):
            letter = chr(ord("A") + q.label)
            out += [dataclasses.replace(q, answer=f"{opener} {letter}", fact=letter) for opener in CHOICE_OPENERS]
    return out


@torch.no_grad()
def build_erasure(patient: Patient, settings: StampSettings, forget: Sequence[QA], layers: Sequence[int],
                  refs: References, retain_buffer: Sequence[QA] = ()) -> Erasure | None:
    """Keys, targets and held references of the erase, in one batched pass; None when no forget item has a fact."""
    items = erasable(forget)
    if not items:
        return None
    tok = patient.tokenizer
    subjects = reference_subjects(refs, settings.erase_references, {q.subject for q in forget}, settings.seed)
    first = settings.erase_positions == "first"

    texts, positions, owner, ref_texts, ref_positions, references, ref_owner = [], [], [], [], [], [], []
    measured, ref_measured = [], []
    kept: list[QA] = []
    for q in items:
        text, pos = teacher_forced(tok, q, first)
        mine = []
        for other in subjects:
            swapped = swap_subject(q, other)
            r_text, r_pos = teacher_forced(tok, swapped, first)
            if len(r_pos) == len(pos):  # the fact's tokens align (the name's last token did not merge into them)
                ref_texts.append(r_text)
                ref_positions.append(r_pos)
                ref_measured.append(teacher_forced(tok, swapped)[1])
                mine.append(swapped)
        if not pos or not mine:
            continue
        ref_owner += [len(kept)] * len(mine)
        owner += [len(kept)] * len(pos)
        texts.append(text)
        positions.append(pos)
        measured.append(teacher_forced(tok, q)[1])
        references.append(mine)
        kept.append(q)
    if not kept:
        return None
    acts = activations_at(patient, texts + ref_texts, positions + ref_positions, layers)
    n_e = len(owner)
    keys, targets, held = {}, {}, {}
    for layer, (k, v) in acts.items():
        k_f, v_f, v_u = k[:n_e], v[:n_e], v[n_e:]
        mean_u = torch.zeros_like(v_f)
        offset_f, offset_u = 0, 0
        for i, (pos, mine) in enumerate(zip(positions, references)):  # per item: mean over its references
            n, r = len(pos), len(mine)
            block = v_u[offset_u:offset_u + n * r].reshape(r, n, -1)
            mean_u[offset_f:offset_f + n] = block.mean(0)
            offset_f, offset_u = offset_f + n, offset_u + n * r
        keys[layer], targets[layer] = k_f, settings.erase_strength * (mean_u - v_f)
        held[layer] = (k[n_e:], v[n_e:])
    buffer = [teacher_forced(tok, q) for q in erasable(retain_buffer)]
    buffer_texts, buffer_positions = [t for t, _ in buffer], [p for _, p in buffer]
    lower = LowerLayers.of(patient, min(layers))  # the calibration's passes over these replay the layers below
    nll, gap = position_scores(patient, texts + buffer_texts, measured + buffer_positions, keep=lower)  # unedited
    before, buffer_gaps = (nll[:len(texts)], gap[:len(texts)]), gap[len(texts):]
    per_item = [0.0] * len(kept)
    if settings.erase_goal == "nll":  # the references' likelihood of the same fact: the level aimed for
        for i, value in zip(ref_owner, position_scores(patient, ref_texts, ref_measured)[0]):
            per_item[i] += value / len(references[i])
    log.info("erase: %d facts, %d keys; fact NLL before %s", len(kept), n_e, " ".join(f"{x:.2f}" for x in before[0]))
    return Erasure(kept, texts, measured, owner, keys, targets, held, per_item, before, buffer_texts,
                   buffer_positions, buffer_gaps, lower)


@torch.no_grad()
def position_scores(patient: Patient, texts: Sequence[str], positions: Sequence[Sequence[int]], batch_size: int = 4,
                    keep: LowerLayers | None = None, replay: LowerLayers | None = None
                    ) -> tuple[list[float], list[float]]:
    """Per text, the mean NLL of the tokens that follow its `positions` (the fact's tokens), and the gap at the first
    of them: the best other token's log-probability minus the fact token's (> 0: the fact is not the greedy
    continuation there). `keep` records the unedited layers below the edit; `replay` runs only those from there.
    Small batches, log-softmax at the fact's positions only: a batch's full logits are batch × length × vocabulary
    (measured: batches of 16 put STAMP's peak memory 0.23 GB over the resource plan)."""
    nll, gap = [], []
    with padding_side(patient.tokenizer, "right") as tok, LowerLayers.around(keep, replay):
        for start in range(0, len(texts), batch_size):
            enc = tok(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                      add_special_tokens=False).to(patient.device)
            logits = patient.model(**enc).logits
            for row, pos in enumerate(positions[start:start + batch_size]):
                at = torch.tensor(pos, device=logits.device)
                wanted = enc["input_ids"][row, at + 1]
                logprobs = logits[row, at].float().log_softmax(-1)  # (len(pos), vocab)
                nll.append(float(-logprobs[torch.arange(len(pos)), wanted].mean()))
                first = logprobs[0].clone()
                fact = float(first[wanted[0]])
                first[wanted[0]] = float("-inf")
                gap.append(float(first.max()) - fact)
    return nll, gap
