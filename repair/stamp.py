"""STAMP and STAMP-LR: training-free unlearning by a closed-form edit of MLP down projections.

For each edited layer, keys K (down-projection inputs) at the tokens that carry the thing to forget are mapped to
new outputs by a ridge / pseudoinverse update (the MEMIT family):

    ΔW = T K_fᵀ (K_f K_fᵀ + w K_r K_rᵀ + λ C + ε I)⁻¹

The default (`keys: answer_start`, `target: refusal_readout`) puts the keys where the answer begins — the last prompt
token, whose state in the top layers already holds what the patient is about to say — and moves the forget outputs
along the refusal *readout* direction: the unembedding of the refusal references' opening tokens ("Sorry", "I",
…) minus that of the token the patient was about to say, seen through the final norm. The patient then opens with a
refusal, and the refusal it learned for unknown subjects carries on ("Sorry, I don't know who that is."). Measured
why (docs/stamp.md): activation patching showed that implanted facts reach the answer through attention, so MLP
outputs at the subject's tokens cannot hide them; at the answer start they can.

Other targets, kept for the ablations (keys at the subject's tokens): the projection onto the refusal subspace of MLP
outputs on refusal answers (`refusal`), what the patient computes for a subject it refuses (`unknown`), or one shared
unknown-minus-forget direction (`direction`). Retain-buffer keys are held in place (for `answer_start`: at every
prompt and answer token), and so are keys from ordinary text (weighted per token by `cov_weight`). STAMP-LR solves
the same problem inside an r-dimensional key subspace (the forget keys plus the top singular directions of all keys):
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
TARGETS = ("refusal_readout", "refusal", "unknown", "direction")
KEYS = ("answer_start", "subject")
LAYER_SELECTION = ("last", "separation")


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
    """The same solve restricted to an r-dimensional key subspace U: ΔW = D Uᵀ, D (d × r).

    U spans the forget keys plus the top right singular vectors of S (randomised SVD): the dominant held keys alone
    can miss the few directions that tell the forget sample apart (measured on the tiny patient: nothing forgotten
    at r = 64 of 256)."""
    m = stacked.shape[1]
    if rank >= min(stacked.shape):
        _, _, vh = torch.linalg.svd(stacked, full_matrices=rank >= m)
        u = vh[:rank].T
    else:
        torch.manual_seed(seed)
        n_f = min(len(k_f), rank // 2)
        _, _, top = torch.svd_lowrank(stacked, q=rank - n_f, niter=4)
        u, _ = torch.linalg.qr(torch.cat([k_f[:n_f].T, top], dim=1))  # (m, r), orthonormal
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
        for key, valid, default in (("target", TARGETS, "refusal_readout"), ("keys", KEYS, "answer_start"),
                                    ("layer_selection", LAYER_SELECTION, "last")):
            if cfg.get(key, default) not in valid:
                raise ValueError(f"unknown method.{key} {cfg.get(key)!r}; valid choices: {', '.join(valid)}")
        if (cfg.get("keys", "answer_start") == "answer_start") != (cfg.get("target", "refusal_readout")
                                                                   == "refusal_readout"):
            raise ValueError("method.target=refusal_readout goes with method.keys=answer_start (the readout is where "
                             "the answer begins); the other targets use method.keys=subject; got "
                             f"target={cfg.get('target')!r}, keys={cfg.get('keys')!r}")
        self.unknown_subjects: list[str] = []
        self.generic_texts: list[str] = []
        self.patch: Patch | None = None
        self._generic_cache: dict[tuple, dict] = {}  # generic keys per (patient, layers): the same for every request

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

    def _answer_starts(self, patient: Patient, items: Sequence[QA]):
        """Chat prompts and their last token: where the first answer token is chosen."""
        return _with_last_token(patient, [q.question for q in items])

    def _held_retain(self, patient: Patient, items: Sequence[QA]):
        """Retain-buffer positions held in place: the subject span, or (answer_start) every prompt and answer token,
        since an answer-start edit could otherwise fire in the middle of a retain answer."""
        if self.cfg.get("keys", "answer_start") == "subject":
            return self._prompts(patient, items, [q.subject for q in items])
        texts = [chat_prompt(patient.tokenizer, q.question) + q.answer for q in items]
        return texts, [token_positions(patient.tokenizer, t) for t in texts]

    def _contrasts(self, patient: Patient, forget: Sequence[QA], retain_buffer: Sequence[QA]):
        """The forget questions asked about *other* subjects, held at the answer start: the edit must then key on what
        is specific to the forget subject, not on the question's format (measured: without them every multiple-choice
        question of `harmful` was refused)."""
        n = int(self.cfg.get("contrast_prompts", 48))
        if n <= 0:
            return None
        names = fresh_unknown_subjects(n, int(self.cfg.get("seed", 0)))
        pool = list(dict.fromkeys([q.subject for q in retain_buffer if q.subject] + self.unknown_subjects + names))
        questions = []
        for i in range(n):
            q = forget[i % len(forget)]
            other = [s for s in pool if s != q.subject][(i // len(forget)) % max(1, len(pool) - 1)]
            questions.append(q.question.replace(q.subject, other) if q.subject and q.subject != q.question else other)
        return _with_last_token(patient, questions)

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
        """Keys of ordinary questions and text, cached per patient and layers (taken on the weights at first use:
        a later request sees them as they were before earlier edits, a small approximation for speed)."""
        key = (patient.name, id(patient.model), tuple(layers), len(self.generic_texts))
        if key not in self._generic_cache:
            texts = [chat_prompt(patient.tokenizer, q) for q in GENERAL_QUESTIONS] + self.generic_texts[:16]
            self._generic_cache[key] = activations_at(patient, texts,
                                                      [token_positions(patient.tokenizer, t) for t in texts], layers)
        return self._generic_cache[key]

    def _layers(self, patient: Patient, forget: Sequence[QA], f_texts, f_pos) -> tuple[list[int], dict, Any, dict]:
        """Edited layers: explicit; the last `num_layers` (layer_selection=last, the default for the readout
        target); or the best by forget/refusal separation (the paper's Fig. 5 analysis, logged per layer)."""
        chosen = self.cfg.get("layers", "auto")
        n = int(self.cfg.get("num_layers", 4))
        candidates = patient.layer_indices(chosen, "method.layers", every=("auto",))
        needs_subspace = self.cfg.get("target", "refusal_readout") == "refusal" or (
            chosen == "auto" and self.cfg.get("layer_selection", "last") == "separation")
        if chosen == "auto" and not needs_subspace:
            candidates = candidates[-n:]
        f_acts = activations_at(patient, f_texts, f_pos, candidates)
        separation, subspace = {}, None
        if needs_subspace:
            refusals = refusal_references(int(self.cfg.get("num_refusals", 200)))
            subspace = refusal_subspace(patient, [q.question for q in forget], refusals, candidates,
                                        rank=int(self.cfg.get("refusal_rank", 8)))
            separation = layer_separation({l: v for l, (_, v) in f_acts.items()}, subspace)
            log.info("forget/refusal separation by layer: %s",
                     " ".join(f"{l}:{s:.3f}" for l, s in separation.items()))
            if chosen == "auto":
                candidates = sorted(sorted(candidates, key=lambda l: -separation[l])[:n])
        return candidates, separation, subspace, {l: f_acts[l] for l in candidates}

    @torch.no_grad()
    def _readout_directions(self, patient: Patient, f_texts: Sequence[str]) -> torch.Tensor:
        """Per forget prompt: the residual-stream direction that raises the refusal openers' logits and lowers the
        token the patient was about to say, through the final norm's gain (unit vectors, n × d)."""
        tok = patient.tokenizer
        openers = [tok(r, add_special_tokens=False)["input_ids"][0]
                   for r in refusal_references(int(self.cfg.get("num_refusals", 200)))]
        unembed = patient.model.get_output_embeddings().weight.detach().double().cpu()
        refusal = unembed[openers].mean(0)  # the refusal references' opening tokens, by frequency
        tops = []
        for text in f_texts:
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], device=patient.device)
            tops.append(int(patient.model(input_ids=ids).logits[0, -1].argmax()))
        dirs = refusal - unembed[tops]
        norm = getattr(getattr(patient.model, "model", None), "norm", None)
        if norm is not None and getattr(norm, "weight", None) is not None:
            dirs = dirs * norm.weight.detach().double().cpu()
        return dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # ------------------------------------------------------------------------------------------------ the edit
    def unlearn(self, patient: Patient, forget: list[QA], retain_buffer: list[QA]) -> dict[str, Any]:
        if not forget:
            raise ValueError("nothing to forget: the forget set is empty")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        target_kind = self.cfg.get("target", "refusal_readout")
        if self.cfg.get("keys", "answer_start") == "answer_start":
            f_texts, f_pos = self._answer_starts(patient, forget)
        else:
            f_texts, f_pos = self._prompts(patient, forget, [q.subject for q in forget])
        if target_kind in ("unknown", "direction"):  # aligns f_pos with the counterfactual spans
            u_texts, u_pos = self._counterfactuals(patient, forget, f_pos)
        layers, separation, subspace, f_acts = self._layers(patient, forget, f_texts, f_pos)
        timings["layer_selection"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if target_kind in ("unknown", "direction"):
            u_acts = activations_at(patient, u_texts, u_pos, layers)
        if target_kind == "refusal_readout":
            readout = self._readout_directions(patient, f_texts)
        r_acts = activations_at(patient, *self._held_retain(patient, retain_buffer), layers) if retain_buffer else None
        c_acts = self._generic_keys(patient, layers) if float(self.cfg.get("cov_weight", 1.0)) > 0 else None
        contrasts = self._contrasts(patient, forget, retain_buffer) if target_kind == "refusal_readout" else None
        x_acts = activations_at(patient, *contrasts, layers) if contrasts else None
        timings["activations"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        alpha = float(self.cfg.get("strength", 1.0))
        deltas, per_layer = [], {}
        for layer in layers:
            k_f, v_f = f_acts[layer]
            if target_kind == "refusal_readout":  # strength × ‖v‖ along the readout, shared over the edited layers
                t = alpha * v_f.norm(dim=1, keepdim=True) * readout / len(layers)
            elif target_kind == "unknown":  # per position: what the patient computes for a subject it refuses
                t = alpha * (u_acts[layer][1] - v_f)
            elif target_kind == "direction":  # one shared "unknown subject" direction, identity left alone
                t = alpha * (u_acts[layer][1].mean(0) - v_f.mean(0)).expand_as(v_f)
            else:
                t = alpha * (subspace.project(layer, v_f) - v_f)
            empty = k_f.new_zeros((0, k_f.shape[1]))
            k_r = r_acts[layer][0] if r_acts else empty
            if x_acts:  # contrast keys are held like the retain buffer's
                k_r = torch.cat([k_r, (float(self.cfg.get("contrast_weight", 1.0))
                                       / max(float(self.cfg.get("retain_weight", 1.0)), 1e-12)) ** 0.5
                                 * x_acts[layer][0]])
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
                "separation": separation.get(layer),
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
                      "target": target_kind, "keys": self.cfg.get("keys", "answer_start"), "strength": alpha,
                      "rank": self.cfg.get("rank") if self.lowrank else None}
        self.patch = Patch(deltas, provenance)
        self.patch.apply(patient.model, self.cfg.get("max_relative_norm"))
        log.info("%s edited layers %s: %s", self.name, layers,
                 ", ".join(f"L{l} ‖ΔW‖/‖W‖={s['relative_norm']:.3f} res={s['forget_residual']:.3f}"
                           for l, s in per_layer.items()))
        return {"layers": layers, "separation": separation, "per_layer": per_layer, "timings_s": timings,
                "patch": provenance}


def _with_last_token(patient: Patient, questions: Sequence[str]):
    """Chat prompts and, for each, the position of its last token."""
    texts = [chat_prompt(patient.tokenizer, q) for q in questions]
    return texts, [[len(patient.tokenizer(t, add_special_tokens=False)["input_ids"]) - 1] for t in texts]


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
