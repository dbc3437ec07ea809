"""Which layers STAMP edits and where it moves the forget keys' outputs.

The default target (`refusal_readout`) moves each forget output along the refusal *readout* direction: the
unembedding of the refusal references' opening tokens ("Sorry", "I", …) minus that of the token the patient was
about to say, seen through the final norm. The others, kept for the ablations (keys at the subject's tokens), are
the projection onto the refusal subspace (`refusal`), what the patient computes for a subject it refuses
(`unknown`), or one shared unknown-minus-forget direction (`direction`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch

from repair.architectures import readout_gain
from repair.patient import Patient
from repair.refusal import RefusalSubspace, activations_at, layer_separation, refusal_subspace
from repair.stamp.settings import StampSettings
from repair.tasks import QA
from repair.tasks.refusals import refusal_references

log = logging.getLogger(__name__)


@dataclass
class LayerChoice:
    layers: list[int]
    separation: dict[int, float]
    subspace: RefusalSubspace | None
    forget_acts: dict[int, tuple[torch.Tensor, torch.Tensor]]  # per layer: forget keys and outputs


def choose_layers(patient: Patient, settings: StampSettings, forget: Sequence[QA], f_texts, f_pos) -> LayerChoice:
    """Edited layers: explicit; the last `num_layers` (layer_selection=last, the default for the readout target); or
    the best by forget/refusal separation (the paper's Fig. 5 analysis, logged per layer)."""
    chosen, n = settings.layers, settings.num_layers
    candidates = patient.layer_indices(chosen, "method.layers", every=("auto",))
    needs_subspace = settings.target == "refusal" or (chosen == "auto" and settings.layer_selection == "separation")
    if chosen == "auto" and not needs_subspace:
        candidates = candidates[-n:]
    f_acts = activations_at(patient, f_texts, f_pos, candidates)
    separation, subspace = {}, None
    if needs_subspace:
        refusals = refusal_references(settings.num_refusals)
        subspace = refusal_subspace(patient, [q.question for q in forget], refusals, candidates,
                                    rank=settings.refusal_rank)
        separation = layer_separation({l: v for l, (_, v) in f_acts.items()}, subspace)
        log.info("forget/refusal separation by layer: %s", " ".join(f"{l}:{s:.3f}" for l, s in separation.items()))
        if chosen == "auto":
            candidates = sorted(sorted(candidates, key=lambda l: -separation[l])[:n])
    return LayerChoice(candidates, separation, subspace, {l: f_acts[l] for l in candidates})


def refusal_openers(tokenizer, n: int, multiple_choice: bool = False) -> list[int]:
    """The first token of each refusal reference, as the patient would open an answer with it. For multiple-choice
    questions only tokens of three or more letters: "I" (half the references: "I'm afraid…") and "H" ("Hmm") were
    measured to be read as an option letter there ("I. the Congo")."""
    firsts = [tokenizer(r, add_special_tokens=False)["input_ids"][0] for r in refusal_references(n)]
    if not multiple_choice:
        return firsts
    return [t for t in firsts if len(tokenizer.decode([t]).strip()) >= 3] or firsts


@torch.no_grad()
def readout_directions(patient: Patient, openers: list[int], f_logits: torch.Tensor) -> torch.Tensor:
    """Per forget prompt: the residual-stream direction that raises the refusal openers' logits and lowers the token
    the patient was about to say (the argmax of `f_logits`), through the final norm (unit vectors, n × d)."""
    unembed = patient.model.get_output_embeddings().weight.detach()
    hidden = patient.model.get_input_embeddings().weight.shape[1]
    if unembed.shape[1] != hidden:
        raise ValueError(f"patient {patient.name!r}: the output head reads width {unembed.shape[1]}, the residual "
                         f"stream is {hidden} wide (a projection sits between them, as OPT-350m's project_out): "
                         f"the refusal_readout target needs the head to read the residual stream; use "
                         f"method.keys=subject with method.target=refusal")
    refusal = unembed[openers].double().cpu().mean(0)  # the refusal references' opening tokens, by frequency
    dirs = readout_gain(patient, refusal - unembed[f_logits.argmax(-1).tolist()].double().cpu())
    return dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)


def layer_target(settings: StampSettings, layer: int, v_f: torch.Tensor, n_layers: int,
                 readout: torch.Tensor | None = None, unknown_acts: dict | None = None,
                 subspace: RefusalSubspace | None = None) -> torch.Tensor:
    """The change T of the forget outputs `v_f` at `layer` (n × d), at the configured strength."""
    alpha = settings.strength
    if settings.target == "refusal_readout":  # strength × ‖v‖ along the readout, shared over the edited layers
        return alpha * v_f.norm(dim=1, keepdim=True) * readout / n_layers
    if settings.target == "unknown":  # per position: what the patient computes for a subject it refuses
        return alpha * (unknown_acts[layer][1] - v_f)
    if settings.target == "direction":  # one shared "unknown subject" direction, identity left alone
        return alpha * (unknown_acts[layer][1].mean(0) - v_f.mean(0)).expand_as(v_f)
    return alpha * (subspace.project(layer, v_f) - v_f)
