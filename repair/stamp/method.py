"""STAMP and STAMP-LR as methods, shaped fit → apply → revert like the closed-form editors of EasyEdit and AlphaEdit.

`fit` reads keys and targets from forward passes and solves for the edit (at the configured strength, one factor
column per forget prompt); `apply` puts it on the weights as a reversible `Patch`, calibrating each forget prompt's
strength; `revert` takes it off. `unlearn` is the three in a row, as every method's request is.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from repair.architectures import is_transposed, through_output_norm
from repair.methods import MethodBase, Unlearned, register_method
from repair.patches import Delta, Patch, PatchRejected
from repair.patient import Patient
from repair.progress import Phases
from repair.refusal import activations_at
from repair.stamp.calibrate import LowerLayers, apply_calibrated, last_logits
from repair.stamp.erase import Erasure, build_erasure
from repair.stamp.keys import (KeyCache, References, add_contrasts, counterfactuals, forget_prompts, held_system,
                               in_contexts, solve_space)
from repair.stamp.settings import StampLowRankSettings, StampSettings
from repair.stamp.solve import HeldGram, full_solve, lowrank_solve, top_directions
from repair.stamp.targets import choose_layers, layer_target, readout_directions, refusal_openers
from repair.tasks import QA, Task

log = logging.getLogger(__name__)

MIN_RELATIVE_NORM = 1e-6  # an edit below this ‖ΔW‖/‖W‖ at every layer changes nothing a float32 forward pass shows
COLLAPSED = 0.01  # calibrated strengths all below this share of method.strength: the edit was calibrated away


class EditFailed(PatchRejected):
    """The edit would not change the patient (its norm is ~0, or the calibration brought it to nothing); the
    weights were left as they were."""


@dataclass
class Edit:
    """A fitted edit, not yet on the weights: per edited layer a low-rank delta at the configured strength (one
    column per forget key), what it was made from, and what the calibration needs."""

    deltas: list[Delta]
    provenance: dict[str, Any]
    per_layer: dict[int, dict[str, Any]]
    layers: list[int]
    separation: dict[int, float]
    forget_texts: list[str]
    forget_items: list[QA]  # the forget item of each prompt (a question also appears inside other contexts)
    openers: list[int] = field(default_factory=list)
    forget_logits: torch.Tensor | None = None  # the unedited next-token logits of the forget prompts
    lower: LowerLayers | None = None  # what the unedited layers below the edited ones output on them
    erasure: Erasure | None = None  # the fact erase's part (its columns follow the forget prompts')
    erase_per_layer: dict[int, dict[str, Any]] = field(default_factory=dict)  # the same for the erase's deltas
    phases: Phases = field(default_factory=Phases)  # wall seconds per phase, fit and apply


@register_method("stamp", label="STAMP")
class Stamp(MethodBase):
    name = "stamp"
    Settings = StampSettings
    lowrank = False

    def __init__(self, settings: StampSettings):
        super().__init__(settings)
        self.refs = References()
        self.cache = KeyCache(on_disk=settings.store_keys)  # what is the same for every request

    def prepare(self, task: Task, session: dict | None = None) -> None:
        """Task-level references: subjects the patient refuses (taught in implant) and ordinary text; in a chat, the
        session's key cache, so its requests share what does not depend on them."""
        self.refs = References.of(task)
        if session is not None:
            self.cache = session.setdefault("stamp_key_cache", self.cache)

    def fit(self, patient: Patient, forget: Sequence[QA], retain_buffer: Sequence[QA]) -> Edit:
        """Keys, targets and the solve, per edited layer."""
        if not forget:
            raise ValueError("nothing to forget: the forget set is empty")
        s = self.settings
        phase = Phases()
        with phase("forget_keys"):  # and the layer choice, which reads them
            f_texts, f_pos = forget_prompts(patient, s, forget)
            f_items = list(forget)
            if s.keys == "answer_start" and s.forget_contexts:
                more, (c_texts, c_pos) = in_contexts(patient, s, forget, retain_buffer)
                f_items, f_texts, f_pos = f_items + more, f_texts + c_texts, f_pos + c_pos
            if s.target in ("unknown", "direction"):  # aligns f_pos with the counterfactual spans
                u_texts, u_pos = counterfactuals(patient, s, forget, f_pos, self.refs)
            choice = choose_layers(patient, s, f_items, f_texts, f_pos)
        layers = choice.layers
        u_acts, openers, f_logits, readout, lower = None, [], None, None, None
        if s.target in ("unknown", "direction"):
            with phase("unknown_keys"):
                u_acts = activations_at(patient, u_texts, u_pos, layers)
        if s.target == "refusal_readout":  # openers and the unedited next-token logits: readout and calibration
            with phase("forget_logits"):
                openers = refusal_openers(patient.tokenizer, s.num_refusals,
                                          multiple_choice=any(q.choices for q in f_items))
                lower = LowerLayers.of(patient, min(layers))  # the calibration passes replay the layers below
                f_logits = last_logits(patient, f_texts, keep=lower)
                readout = readout_directions(patient, openers, f_logits)
        held = held_system(patient, s, layers, forget, retain_buffer, self.refs, self.cache, phase)
        device, dtype = solve_space(patient, s)
        keyed = {}
        for layer in layers:
            k_f, v_f = choice.forget_acts[layer]
            t = layer_target(s, layer, v_f, len(layers), readout, u_acts, choice.subspace)
            if s.target == "refusal_readout":  # a residual-stream push: through a norm after the MLP, if any
                t = through_output_norm(patient, layer, v_f, t)
            keyed[layer] = (k_f, t)
        with phase("solve"):
            deltas, per_layer, rank, width = self.solve(patient, keyed, held, choice.separation)
        erasure, erase_layer_stats = None, {}
        if s.erase and s.target == "refusal_readout":
            with phase("erase_keys"):
                erasure = build_erasure(patient, s, forget, layers, self.refs, retain_buffer)
        if erasure is not None:  # its own solve at the same layers: its keys, held as the rest plus the references
            erase_held = {l: add_contrasts(held[l], *(x.to(device=device, dtype=dtype) for x in erasure.held[l]),
                                           s.contrast_weight) for l in layers}
            with phase("solve"):
                erase_deltas, erase_layer_stats, _, _ = self.solve(
                    patient, {l: (erasure.keys[l], erasure.targets[l]) for l in layers}, erase_held, {})
            deltas = [Delta(d.parameter, torch.cat([d.left, e.left], 1), torch.cat([d.right, e.right]), d.transposed)
                      for d, e in zip(deltas, erase_deltas)]  # one delta per weight: the two edits' sum
        provenance = {"method": self.name, "forget": [q.question for q in forget], "layers": layers,
                      "target": s.target, "keys": s.keys, "strength": s.strength,
                      "rank": min(rank, width) if self.lowrank else None,
                      "erase": {"facts": len(erasure.items), "keys": len(erasure.owner)} if erasure else None}
        if self.lowrank and rank > width:
            provenance["rank_requested"] = rank
        return Edit(deltas, provenance, per_layer, layers, choice.separation, f_texts, f_items, openers, f_logits, lower,
                    erasure=erasure, erase_per_layer=erase_layer_stats, phases=phase)

    def solve(self, patient: Patient, keyed: dict[int, tuple[torch.Tensor, torch.Tensor]], held: dict[int, dict],
              separation: dict[int, float]) -> tuple[list[Delta], dict[int, dict], int, int]:
        """Per edited layer, the closed-form edit of its keys to their targets (`keyed`) as factors (one column per
        key) and what it does to the keys; also the rank solved at and the narrowest key width."""
        s = self.settings
        layers = sorted(keyed)
        rank = self.settings.rank if self.lowrank else 0
        width = min(held[layer]["gram"].width for layer in layers)
        if self.lowrank and rank > width:  # the key space has only `width` dimensions: that is the rank solved at
            log.warning("method.rank=%d is above the MLP width %d of the edited layers: solving at rank %d (the full "
                        "edit, as STAMP)", rank, width, width)
        device, dtype = solve_space(patient, s)
        deltas, per_layer = [], {}
        for layer in layers:
            k_f, t = (x.to(device=device, dtype=dtype) for x in keyed[layer])
            h = held[layer]
            gram = HeldGram(h["gram"].static.to(device), h["gram"].extra)  # one copy where it is kept in host memory
            if self.lowrank:
                def directions(h=h, layer=layer):  # of the request-independent Gram: stored, computed only if needed
                    return self.cache.get("directions", patient, [layer], [h["held_entry"], rank, s.seed],
                                          lambda: top_directions(h["static"]["gram"], rank, s.seed))
                left, right = lowrank_solve(k_f, t, gram, s.eps, rank, directions,
                                            krylov_steps=self.settings.krylov_steps)
            else:
                left, right = full_solve(k_f, t, gram, s.eps)
            del gram
            per_layer[layer] = {
                "separation": separation.get(layer),
                "weight_norm": float(patient.module("mlp_down", layer).weight.detach().norm()),
                "forget_residual": float(((k_f @ right.T) @ left.T - t).norm() / t.norm().clamp_min(1e-12)),
                "retain_shift": float(((h["keys"] @ right.T) @ left.T).norm()) / max(h["values_sq"], 1e-24) ** 0.5
                if len(h["keys"]) else None,
                "forget_keys": int(len(k_f)), "retain_keys": int(len(h["keys"])), "generic_keys": h["generic_keys"],
            }
            deltas.append(Delta(f"{patient.path('mlp_down', layer)}.weight", left.float().cpu(), right.float().cpu(),
                                transposed=is_transposed(patient.module("mlp_down", layer))))
        return deltas, per_layer, rank, width

    def apply(self, patient: Patient, edit: Edit, forget: Sequence[QA], retain_buffer: Sequence[QA]
              ) -> tuple[Patch, list[dict]]:
        """Put the edit on the weights, each forget prompt at its calibrated strength (repair/stamp/calibrate.py);
        returns the applied patch and the calibration's steps."""
        return apply_calibrated(patient, self.settings, edit.deltas, edit.provenance, edit.forget_items, edit.forget_texts,
                                retain_buffer, edit.openers, edit.forget_logits, self.cache, edit.phases, edit.lower,
                                edit.erasure)

    def check_edit(self, patient: Patient, patch: Patch, edit: Edit) -> None:
        """An edit that changes nothing is an error, never a success: its norm is ~0 at every layer (the forget keys
        or targets are zero: measured on an untrained Gemma-3), or the calibration took every prompt's strength to
        almost nothing (the patient opened them with a refusal before any edit). The patch is taken off first."""
        norms = {l: s["relative_norm"] for l, s in edit.per_layer.items()}
        strengths = patch.provenance.get("strengths") or [patch.provenance["strength"]]
        why = None
        if max(norms.values(), default=0.0) < MIN_RELATIVE_NORM:
            why = (f"its norm is ~0 at every edited layer (‖ΔW‖/‖W‖ {', '.join(f'L{l} {n:.1e}' for l, n in norms.items())}"
                   f" < {MIN_RELATIVE_NORM:g}): the forget keys or the readout give no edit (a patient that has "
                   f"learned nothing, or a final norm whose gain reads as 0)")
        elif self.settings.calibrate and max(strengths) < COLLAPSED * self.settings.strength:
            why = (f"the calibration brought every forget prompt's strength below {COLLAPSED:g} × method.strength "
                   f"(largest {max(strengths):.2g}): the patient already opens these prompts with a refusal, so "
                   f"there is nothing for the edit to do")
        if why:
            self.revert(patient, patch)
            raise EditFailed(f"{self.name} on patient {patient.name!r}: the edit would not change the patient: {why}."
                             f" Nothing was changed")

    @staticmethod
    def revert(patient: Patient, patch: Patch) -> None:
        """Take the edit off: the weights are bit for bit what they were before `apply`."""
        patch.revert(patient.model)

    def unlearn(self, patient: Patient, forget: list[QA], retain_buffer: list[QA]) -> Unlearned:
        self.cache.reset()
        edit = self.fit(patient, forget, retain_buffer)
        patch, calibration = self.apply(patient, edit, forget, retain_buffer)
        n_r = len(edit.forget_texts)
        for stats, erase_stats, delta in zip(edit.per_layer.values(), [*edit.erase_per_layer.values()] or
                                             [None] * len(patch.deltas), patch.deltas):  # at the applied strengths
            weight = stats.pop("weight_norm")
            stats["relative_norm"] = delta.norm() / weight
            if erase_stats is not None:  # the erase's own columns, and the refusal's without them
                erase_stats.pop("weight_norm")
                erase_stats["relative_norm"] = Delta("", delta.left[:, n_r:], delta.right[n_r:]).norm() / weight
                stats["refusal_relative_norm"] = Delta("", delta.left[:, :n_r], delta.right[:n_r]).norm() / weight
        self.check_edit(patient, patch, edit)
        log.info("%s edited layers %s at strength %.3g: %s", self.name, edit.layers, patch.provenance["strength"],
                 ", ".join(f"L{l} ‖ΔW‖/‖W‖={s['relative_norm']:.3f} res={s['forget_residual']:.3f}"
                           for l, s in edit.per_layer.items()))
        log.info("%s phases: %s", self.name, edit.phases.summary())
        if edit.erasure is not None:
            log.info("%s erase at layers %s: %s", self.name, list(edit.erase_per_layer),
                     ", ".join(f"L{l} ‖ΔW‖/‖W‖={s['relative_norm']:.3f} res={s['forget_residual']:.3f}"
                               for l, s in edit.erase_per_layer.items()))
        report = {"layers": edit.layers, "separation": edit.separation, "per_layer": edit.per_layer,
                  "erase_per_layer": edit.erase_per_layer,
                  "phases": edit.phases.seconds, "key_cache": self.cache.counts, "calibration": calibration,
                  "patch": patch.provenance}
        return Unlearned(report, patch)


@register_method("stamp_lowrank", label="STAMP-LR")
class StampLowRank(Stamp):
    name = "stamp_lowrank"
    Settings = StampLowRankSettings
    lowrank = True
