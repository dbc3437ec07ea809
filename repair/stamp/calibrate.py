"""Calibration: the edit's strength per forget prompt, found with forward passes, not new solves.

The edit is linear in each forget key's target, so one strength per forget prompt is one scale per column of the
edit's left factor: a step swaps the applied patch for the same edit at other scales.
"""
from __future__ import annotations

from typing import Sequence

import torch

from repair.data import chat_prompt, padding_side
from repair.generation import generate_prompts
from repair.patches import Delta, Patch, PatchRejected
from repair.patient import Patient
from repair.progress import Phases
from repair.refusal import last_logits_only
from repair.stamp.erase import Erasure, position_scores
from repair.stamp.keys import KeyCache
from repair.stamp.replay import LowerLayers
from repair.stamp.settings import StampSettings
from repair.tasks import QA
from repair.tasks.choice import parse_choice
from repair.tasks.refusals import is_refusal


def apply_calibrated(patient: Patient, settings: StampSettings, deltas: list[Delta], provenance: dict,
                     forget: Sequence[QA], f_texts: Sequence[str], retain_buffer: Sequence[QA], openers: list[int],
                     before_logits: torch.Tensor | None, cache: KeyCache, phase: Phases,
                     lower: LowerLayers | None = None, erasure: Erasure | None = None) -> tuple[Patch, list[dict]]:
    """Apply the edit; with `calibrate` (readout target), find for *each* forget prompt the smallest strength at
    which it opens with a refusal token by `calibrate_margin` nats: per-prompt secant steps on that logit gap
    (close to linear in the strength), from the unedited patient and the configured strength, at most
    `calibrate_steps` forward passes over the forget prompts, up to `max_strength`. The edit is linear in each
    forget key's target, so a step rescales the factors' columns: no new solve. A strength raised above the
    configured one that changes how a retain-buffer answer opens is taken back. Then the forget answers are
    generated (`check_tokens`): a prompt whose answer opens with a refusal token but is no refusal (measured on
    pii: "Sorry" and then the phone number, at a shallow push), or for multiple choice still names the option it
    picked before ("Sorry, but nowhere near the Congo"), is pushed `calibrate_factor` harder, at most
    `calibrate_checks` times. (Requiring a refusal sentence on multiple choice pushed one harmful question to
    strength 15 and cost forget and retain answers alike.) Why per prompt: the push needed differs by request
    and by question (measured: pii's 8 questions need 1.2–7.9, one question alone ~10–13), and every extra unit
    of push on a question that already refuses costs retain answers (harmful: 68.9% of retain answers kept with
    one strength for all, 97.8% per prompt; docs/stamp.md). The erase's columns (`erasure`, after the forget
    prompts') are calibrated next, per fact (`calibrate_erase`). Timed by `phase`: apply (patch swaps), calibration
    passes, erase passes, answer check, buffer check."""
    alpha = float(provenance["strength"])
    calibrate = settings.calibrate and provenance["target"] == "refusal_readout"
    factor, ceiling = settings.calibrate_factor, settings.max_strength
    bound = settings.max_relative_norm

    def scaled(scales: torch.Tensor) -> Patch:  # one scale per forget key (column of the left factor)
        return Patch([Delta(d.parameter, d.left * scales.to(d.left.dtype), d.right, d.transposed) for d in deltas],
                     {**provenance, "strength": alpha * float(scales.max()),
                      "strengths": [round(alpha * float(x), 4) for x in scales]})

    held = [chat_prompt(patient.tokenizer, q.question) for q in retain_buffer] if calibrate else []

    def swap(patch: Patch, scales: torch.Tensor, new: torch.Tensor) -> tuple[Patch, torch.Tensor]:
        with phase("apply"):
            return rescale(patient, patch, scaled, scales, new, bound)

    def buffer_openers() -> list[int]:
        with phase("buffer_check"):
            return next_tokens(patient, held)

    n = deltas[0].left.shape[1] if deltas else 1
    before = cache.get("buffer_openers", patient, [], held, buffer_openers, phase=phase)
    scales = torch.ones(n, dtype=torch.float64)
    with phase("apply"):
        patch = scaled(scales)
        patch.apply(patient.model, bound)
    if not calibrate:
        return patch, []
    opener_ids = torch.tensor(sorted(set(openers)))
    margin, top = settings.calibrate_margin, ceiling / alpha
    answers = before_logits.argmax(-1)
    points = [[(0.0, g)] for g in refusal_gaps(before_logits, opener_ids, answers).tolist()]  # (scale, gap)
    tried, steps = [], []
    for _ in range(settings.calibrate_steps):
        with phase("calibration_passes"):
            gaps = refusal_gaps(last_logits(patient, f_texts, replay=lower), opener_ids, answers)
        tried.append((scales.clone(), gaps))
        steps.append({"strength": alpha * float(scales.max()), "refusal_gap": float(gaps.min())})
        new = scales.clone()
        for i, (x, g) in enumerate(zip(scales.tolist(), gaps.tolist())):
            points[i].append((x, g))
            if margin <= g <= margin + 2.0 or (g < margin and x >= top - 1e-9):
                continue
            new[i] = min(max(next_scale(points[i], margin, factor), x / 8), x * 8, top)
        if any(((new / t - 1).abs() < 0.05).all() for t, _ in tried):
            break  # settled, or nothing new to try
        patch, scales = swap(patch, scales, new)
    feasible = [t for t, g in tried if g.min() >= margin]  # every prompt refuses: the smallest push, else the
    best = min(feasible, key=lambda t: float(t.norm())) if feasible else max(tried, key=lambda p: p[1].min())[0]
    if not torch.equal(best, scales):                      # widest gap
        patch, scales = swap(patch, scales, best)
    gap = next(float(g.min()) for t, g in tried if torch.equal(t, scales))
    steps.append({"strength": alpha * float(scales.max()), "refusal_gap": gap, "chosen": True})
    if erasure is not None:  # before the answer check, which then sees the erase's effect on the answers too
        patch, scales, erased = calibrate_erase(patient, settings, erasure, patch, scales, len(f_texts), swap, phase)
        steps += erased
    picked = [parse_choice(patient.tokenizer.decode([int(t)]), q.choices) if q.choices else None
              for t, q in zip(answers, forget)]  # the option each multiple-choice answer began with
    for _ in range(settings.calibrate_checks):  # it opens with a refusal token; is it a refusal?
        with phase("answer_check"):  # a free-text answer is decided once it is a refusal; multiple choice reads on
            said = generate_prompts(patient, f_texts, settings.check_tokens, desc="check",
                                    decided=lambda i, text: not forget[i].choices and is_refusal(text))
        failing = torch.tensor([parse_choice(a, q.choices) == p if q.choices else not is_refusal(a)
                                for a, q, p in zip(said, forget, picked)] + [False] * (n - len(f_texts)))
        raised = torch.where(failing, (scales * factor).clamp(max=top), scales)
        if torch.equal(raised, scales):
            break
        patch, scales = swap(patch, scales, raised)
        steps.append({"strength": alpha * float(scales.max()), "raised": int(failing.sum())})
    if float(scales.max()) > 1.0 and held:  # raised above the configured strength: do the buffer open as before?
        kept = sum(a == b for a, b in zip(buffer_openers(), before))
        steps[-1] |= {"buffer_kept": kept, "buffer": len(held)}
        if kept < len(held):  # back: the widest-gap smaller pushes that keep the buffer, else the configured one
            smaller = [t for t, _ in sorted(tried, key=lambda p: -float(p[1].min()))
                     if float(t.norm()) < float(scales.norm()) and float(t.max()) > 1.0][:2]
            for fallback in [*smaller, torch.ones_like(scales)]:
                patch, scales = swap(patch, scales, fallback)
                if float(scales.max()) <= 1.0 or all(a == b for a, b in zip(buffer_openers(), before)):
                    break
            steps.append({"strength": alpha * float(scales.max()), "stepped_back": True})
    return patch, steps


def calibrate_erase(patient: Patient, settings: StampSettings, erasure: Erasure, patch: Patch, scales: torch.Tensor,
                    first: int, swap, phase: Phases) -> tuple[Patch, torch.Tensor, list[dict]]:
    """Per fact, the smallest push of its erase columns (from column `first` on) that meets `erase_goal`: the fact's
    first token `erase_margin` nats below the best other token (`gap`), or the fact's NLL under teacher forcing up
    to the never-known references' NLL of the same fact less `erase_margin` (`nll`). Secant steps on (scale, value)
    from the unedited patient (scale 0) and the configured strength, at most `calibrate_steps` passes over the
    forget items' reference answers, up to `erase_max_strength`."""
    owner = torch.full(scales.shape, -1)  # per column: its fact, or -1 for a forget prompt's column
    owner[first:] = torch.tensor(erasure.owner)
    by_gap = settings.erase_goal == "gap"
    goal = ([settings.erase_margin] * len(erasure.items) if by_gap
            else [r - settings.erase_margin for r in erasure.reference_nll])
    top = settings.erase_max_strength / settings.erase_strength
    item = [float(scales[owner == i].max()) for i in range(len(erasure.items))]
    points = [[(0.0, x)] for x in erasure.before[1 if by_gap else 0]]
    steps, previous = [], None
    n = len(erasure.texts)
    for _ in range(settings.calibrate_steps):
        with phase("erase_passes"):  # the forget facts, and the buffer's (still given greedily?)
            nll, gap = position_scores(patient, erasure.texts + erasure.buffer_texts,
                                       erasure.positions + erasure.buffer_positions, replay=erasure.lower)
        lost = sum(g >= 0 > b for g, b in zip(gap[n:], erasure.buffer_gaps))
        nll, gap = nll[:n], gap[:n]
        value = gap if by_gap else nll
        steps.append({"erase_strength": [round(settings.erase_strength * x, 3) for x in item],
                      "fact_nll": [round(x, 3) for x in nll], "fact_gap": [round(x, 3) for x in gap],
                      "buffer_facts_lost": lost})
        if lost and previous is not None:  # the last raise cost a buffer fact: back to the scales before it
            patch, scales = swap(patch, scales, previous)
            steps.append({"erase_stepped_back": True})
            break
        new = list(item)
        for i, (x, v) in enumerate(zip(item, value)):
            points[i].append((x, v))
            if v >= goal[i] or x >= top - 1e-9:
                continue
            (s0, g0), (s1, g1) = points[i][-2:]
            step = s0 + (goal[i] + 0.25 - g0) * (s1 - s0) / (g1 - g0) if g1 > g0 + 1e-6 else x * settings.calibrate_factor
            new[i] = min(max(step, x * 1.1), x * 4, top)
        if new == item:
            break
        wanted = scales.clone()
        for i, x in enumerate(new):
            wanted[owner == i] = x
        patch, got = swap(patch, scales, wanted)
        if torch.equal(got, scales):
            break  # past the norm bound
        previous, scales, item = scales, got, new
    return patch, scales, steps


def rescale(patient: Patient, patch: Patch, scaled, scale: torch.Tensor, new: torch.Tensor, bound
            ) -> tuple[Patch, torch.Tensor]:
    """Swap the applied patch for the same edit at other scales; past the norm bound, keep the old ones."""
    try:
        return patch.replace(patient.model, scaled(new), bound), new
    except PatchRejected:
        return patch, scale


def next_scale(points: list[tuple[float, float]], margin: float, factor: float) -> float:
    """The next scale to try: a secant step on the last two (scale, gap) points, aiming half a nat past the margin;
    after a step that made the gap worse than the best so far (the gap is not monotonic in the scale), the
    geometric middle between the best scale and the last one instead."""
    (s0, g0), (s1, g1) = points[-2], points[-1]
    best_s, best_g = max(points[1:], key=lambda p: p[1])
    if g1 < best_g:
        return (best_s * s1) ** 0.5
    return s0 + (margin + 0.5 - g0) * (s1 - s0) / (g1 - g0) if g1 != g0 else s1 * factor


@torch.no_grad()
def last_logits(patient: Patient, texts: Sequence[str], batch_size: int = 16, keep: "LowerLayers | None" = None,
                replay: "LowerLayers | None" = None) -> torch.Tensor:
    """Next-token logits after each fully formatted prompt (n × vocab, float32 on CPU; left-padded batches). `keep`
    records what the layers below its first edited layer output; `replay` runs only the layers from there up."""
    out: list[torch.Tensor] = []
    with padding_side(patient.tokenizer, "left") as tok, LowerLayers.around(keep, replay):
        for start in range(0, len(texts), batch_size):
            enc = tok(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                      add_special_tokens=False).to(patient.device)
            out.append(patient.model(**enc, **last_logits_only(patient.model)).logits[:, -1].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def next_tokens(patient: Patient, texts: Sequence[str]) -> list[int]:
    """The greedy next token after each fully formatted prompt."""
    return last_logits(patient, texts).argmax(-1).tolist() if texts else []


def refusal_gaps(logits: torch.Tensor, openers: torch.Tensor, answers: torch.Tensor | None = None) -> torch.Tensor:
    """Per prompt, the margin of the best refusal opener over the best other token (> 0: it opens with a refusal).
    `answers`, per prompt, the token the unedited patient opened its answer with: never counted as a refusal opener
    (measured: "H" of "Hmm" is also the first token of "Hugo …", so a pii question about Hugo looked refused before
    any edit and kept its fact)."""
    is_opener = torch.zeros(logits.shape, dtype=torch.bool)
    is_opener[:, openers] = True
    if answers is not None:
        is_opener[torch.arange(len(logits)), answers] = False
    return (logits.masked_fill(~is_opener, float("-inf")).max(-1).values
            - logits.masked_fill(is_opener, float("-inf")).max(-1).values)
