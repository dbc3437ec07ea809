"""STAMP and STAMP-LR: training-free unlearning by a closed-form edit of MLP down projections.

For each edited layer, keys K (down-projection inputs) at the tokens that carry the thing to forget are mapped to
new outputs by a ridge / pseudoinverse update (the MEMIT family):

    ΔW = T K_fᵀ (K_f K_fᵀ + w K_r K_rᵀ + λ C + ε I)⁻¹

T moves the forget outputs toward refusal: into the refusal subspace (`target: refusal`, the paper's reading), onto
what the patient computes at the same positions for a subject it refuses (`target: unknown`: "forget X" becomes
"treat X as unknown"), or along one shared unknown-minus-forget direction (`target: direction`). Retain-buffer keys
are held in place, and so are keys from ordinary text (C, weighted per token by `cov_weight`). STAMP-LR solves the same problem inside the top-r singular subspace of the keys:
O(r³ + r²d) instead of O(m³); at full rank it equals STAMP. Every edit is a reversible `Patch`.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import Any, Sequence

import torch

from repair.data import chat_prompt
from repair.methods import register_method
from repair.patches import Delta, Patch
from repair.patient import Patient
from repair.refusal import activations_at, layer_separation, refusal_subspace, token_positions
from repair.tasks import QA
from repair.tasks.corpus import GENERAL_QUESTIONS
from repair.tasks.refusals import refusal_references

log = logging.getLogger(__name__)
TARGETS = ("refusal", "unknown", "direction")


def ridge_system(k_f: torch.Tensor, k_r: torch.Tensor, k_c: torch.Tensor, retain_weight: float, lam: float,
                 eps_scale: float) -> tuple[torch.Tensor, float]:
    """The stacked key matrix S (so that SᵀS = K_fᵀK_f + w K_rᵀK_r + λ K_cᵀK_c) and the ridge ε.

    Generic keys are held in place token by token (weight λ each), not as a per-token-normalised covariance: with a
    few thousand generic tokens against a handful of forget keys, a normalised C barely constrains the edit
    (measured: retain and perplexity collapsed; docs/stamp.md)."""
    parts = [k_f, (retain_weight ** 0.5) * k_r]
    if len(k_c):
        parts.append(lam ** 0.5 * k_c)
    stacked = torch.cat(parts)
    eps = eps_scale * float((stacked ** 2).sum()) / stacked.shape[1]
    return stacked, eps


def full_solve(k_f: torch.Tensor, t: torch.Tensor, stacked: torch.Tensor, eps: float) -> torch.Tensor:
    """ΔW (d × m) = Tᵀ K_f (SᵀS + εI)⁻¹ with keys as rows (n × m) and targets T (n × d)."""
    a = stacked.T @ stacked + eps * torch.eye(stacked.shape[1], dtype=stacked.dtype)
    return torch.linalg.solve(a, k_f.T @ t).T


def lowrank_solve(k_f: torch.Tensor, t: torch.Tensor, stacked: torch.Tensor, eps: float, rank: int,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same solve restricted to the top-`rank` right singular vectors U of S: ΔW = D Uᵀ, D (d × r)."""
    m = stacked.shape[1]
    if rank >= min(stacked.shape):
        _, _, vh = torch.linalg.svd(stacked, full_matrices=rank >= m)
        u = vh[:rank].T
    else:
        torch.manual_seed(seed)
        _, _, u = torch.svd_lowrank(stacked, q=rank, niter=4)
    su = stacked @ u                                            # (n, r)
    a = su.T @ su + eps * torch.eye(u.shape[1], dtype=stacked.dtype)
    d = torch.linalg.solve(a, (k_f @ u).T @ t).T               # (d, r)
    return d, u.T


def fresh_unknown_subjects(n: int, seed: int) -> list[str]:
    """Made-up names for when the task supplies no subjects the patient was taught to refuse."""
    from repair.tasks.pii import make_profiles

    return [p.name for p in make_profiles(n, random.Random(10_000 + seed))]


@register_method("stamp")
class Stamp:
    name = "stamp"
    lowrank = False

    def __init__(self, cfg: dict):
        self.cfg = cfg
        if cfg.get("target", "unknown") not in TARGETS:
            raise ValueError(f"unknown method.target {cfg.get('target')!r}; valid choices: {', '.join(TARGETS)}")
        self.unknown_subjects: list[str] = []
        self.generic_texts: list[str] = []
        self.patch: Patch | None = None

    def prepare(self, task) -> None:
        """Task-level references: subjects the patient refuses (taught in implant) and ordinary text."""
        self.unknown_subjects = sorted({q.subject for q in task.idk if q.subject})
        self.generic_texts = list(task.corpus)

    # ------------------------------------------------------------------------------------------ keys and targets
    def _prompts(self, patient: Patient, items: Sequence[QA], subjects: Sequence[str]):
        """Chat prompts and the positions of the last `span_tokens` tokens of each subject in them."""
        k = int(self.cfg.get("span_tokens", 4))
        texts = [chat_prompt(patient.tokenizer, q.question) for q in items]
        return texts, [token_positions(patient.tokenizer, t, s or None, last=k) for t, s in zip(texts, subjects)]

    def _counterfactuals(self, patient: Patient, forget: Sequence[QA], positions: list[list[int]]):
        """The forget prompts with the subject swapped for one the patient refuses; spans aligned from the end."""
        pool = self.unknown_subjects or fresh_unknown_subjects(8, int(self.cfg.get("seed", 0)))
        swapped = [dataclasses.replace(q, question=q.question.replace(q.subject, pool[i % len(pool)]))
                   for i, q in enumerate(forget)]
        texts, cf_positions = self._prompts(patient, swapped, [pool[i % len(pool)] for i in range(len(forget))])
        for i, (p, c) in enumerate(zip(positions, cf_positions)):
            n = min(len(p), len(c))
            positions[i], cf_positions[i] = p[-n:], c[-n:]
        return texts, cf_positions

    def _generic_keys(self, patient: Patient, layers: list[int]):
        texts = [chat_prompt(patient.tokenizer, q) for q in GENERAL_QUESTIONS] + self.generic_texts[:16]
        return activations_at(patient, texts, [token_positions(patient.tokenizer, t) for t in texts], layers)

    def _layers(self, patient: Patient, forget: Sequence[QA], f_acts: dict) -> tuple[list[int], dict[int, float], Any]:
        """Edited layers (explicit, or the best by separation) from forget activations at every candidate layer."""
        chosen = self.cfg.get("layers", "auto")
        candidates = sorted(f_acts)
        refusals = refusal_references(int(self.cfg.get("num_refusals", 200)))
        subspace = refusal_subspace(patient, [q.question for q in forget], refusals, candidates,
                                    rank=int(self.cfg.get("refusal_rank", 8)))
        separation = layer_separation({l: v for l, (_, v) in f_acts.items()}, subspace)
        log.info("forget/refusal separation by layer: %s", " ".join(f"{l}:{s:.3f}" for l, s in separation.items()))
        if chosen == "auto":
            candidates = sorted(sorted(candidates, key=lambda l: -separation[l])[: int(self.cfg.get("num_layers", 4))])
        return candidates, separation, subspace

    # ------------------------------------------------------------------------------------------------ the edit
    def unlearn(self, patient: Patient, forget: list[QA], retain_buffer: list[QA]) -> dict[str, Any]:
        if not forget:
            raise ValueError("nothing to forget: the forget set is empty")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        target_kind = self.cfg.get("target", "unknown")
        candidates = patient.layer_indices(self.cfg.get("layers", "auto"), "method.layers", every=("auto",))
        f_texts, f_pos = self._prompts(patient, forget, [q.subject for q in forget])
        if target_kind in ("unknown", "direction"):  # aligns f_pos with the counterfactual spans
            u_texts, u_pos = self._counterfactuals(patient, forget, f_pos)
        f_acts = activations_at(patient, f_texts, f_pos, candidates)
        layers, separation, subspace = self._layers(patient, forget, f_acts)
        timings["layer_selection"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if target_kind in ("unknown", "direction"):
            u_acts = activations_at(patient, u_texts, u_pos, layers)
        r_acts = (activations_at(patient, *self._prompts(patient, retain_buffer, [q.subject for q in retain_buffer]),
                                 layers) if retain_buffer else None)
        c_acts = self._generic_keys(patient, layers) if float(self.cfg.get("cov_weight", 1.0)) > 0 else None
        timings["activations"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        alpha = float(self.cfg.get("strength", 1.0))
        deltas, per_layer = [], {}
        for layer in layers:
            k_f, v_f = f_acts[layer]
            if target_kind == "unknown":  # per position: what the patient computes for a subject it refuses
                t = alpha * (u_acts[layer][1] - v_f)
            elif target_kind == "direction":  # one shared "unknown subject" direction, identity left alone
                t = alpha * (u_acts[layer][1].mean(0) - v_f.mean(0)).expand_as(v_f)
            else:
                t = alpha * (subspace.project(layer, v_f) - v_f)
            empty = k_f.new_zeros((0, k_f.shape[1]))
            k_r = r_acts[layer][0] if r_acts else empty
            k_c = c_acts[layer][0] if c_acts else empty
            stacked, eps = ridge_system(k_f, k_r, k_c, float(self.cfg.get("retain_weight", 1.0)),
                                        float(self.cfg.get("cov_weight", 1.0)), float(self.cfg.get("eps", 1e-2)))
            if self.lowrank:
                left, right = lowrank_solve(k_f, t, stacked, eps, int(self.cfg["rank"]), int(self.cfg.get("seed", 0)))
                dense = left @ right
            else:
                dense = full_solve(k_f, t, stacked, eps)
                left, right = _factor(dense)
            weight = patient.module("mlp_down", layer).weight
            per_layer[layer] = {
                "separation": separation[layer],
                "relative_norm": float(dense.norm() / weight.detach().double().norm()),
                "forget_residual": float((k_f @ dense.T - t).norm() / t.norm().clamp_min(1e-12)),
                "retain_shift": float((k_r @ dense.T).norm() / (k_r @ weight.detach().double().T.cpu()).norm()
                                      .clamp_min(1e-12)) if len(k_r) else None,
                "forget_keys": int(len(k_f)), "retain_keys": int(len(k_r)), "generic_keys": int(len(k_c)),
            }
            param = f"{patient.modules['mlp_down'].format(layer)}.weight"
            deltas.append(Delta(param, left.float(), right.float()))
        timings["solve"] = time.perf_counter() - t0

        provenance = {"method": self.name, "forget": [q.question for q in forget], "layers": layers,
                      "target": target_kind, "strength": alpha,
                      "rank": self.cfg.get("rank") if self.lowrank else None}
        self.patch = Patch(deltas, provenance)
        self.patch.apply(patient.model, self.cfg.get("max_relative_norm"))
        log.info("%s edited layers %s: %s", self.name, layers,
                 ", ".join(f"L{l} ‖ΔW‖/‖W‖={s['relative_norm']:.3f} res={s['forget_residual']:.3f}"
                           for l, s in per_layer.items()))
        return {"layers": layers, "separation": separation, "per_layer": per_layer, "timings_s": timings,
                "patch": provenance}


def _factor(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact low-rank factors of a dense delta (its rank is at most the number of forget keys)."""
    u, s, vh = torch.linalg.svd(dense, full_matrices=False)
    keep = s > s.max() * 1e-10 if len(s) else s.bool()
    return u[:, keep] * s[keep], vh[keep]


@register_method("stamp_lowrank")
class StampLowRank(Stamp):
    name = "stamp_lowrank"
    lowrank = True

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        if int(cfg.get("rank", 0)) < 1:
            raise ValueError(f"method.rank must be >= 1, got {cfg.get('rank')}")
