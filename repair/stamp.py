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
prompt and answer token), and so are keys from ordinary text (weighted per token by `cov_weight`); their Gram is
cached per patient. STAMP-LR solves the same problem inside an r-dimensional key subspace (the forget keys' block
Krylov space under the held Gram, where the full edit lives, then the Gram's top directions): O(m²r + r³) per
request instead of O(m³); at full rank it equals STAMP. The strength is calibrated per request and per forget
prompt (the edit is linear in each forget key's target). Every edit is a reversible `Patch`.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import Any, Sequence

import torch

from repair.data import chat_prompt, padding_side
from repair.evaluate import generate_prompts
from repair.methods import register_method
from repair.patches import Delta, Patch, PatchRejected
from repair.patient import Patient
from repair.refusal import activations_at, last_logits_only, layer_separation, refusal_subspace, token_positions
from repair.tasks import QA
from repair.tasks.choice import parse_choice, stem, with_options
from repair.tasks.corpus import GENERAL_QUESTIONS
from repair.tasks.refusals import is_refusal, refusal_references

log = logging.getLogger(__name__)
TARGETS = ("refusal_readout", "refusal", "unknown", "direction")
KEYS = ("answer_start", "subject")
LAYER_SELECTION = ("last", "separation")
CONTRAST_SOURCES = ("forget", "buffer")


def held_gram(k_r: torch.Tensor, k_c: torch.Tensor, retain_weight: float, lam: float) -> torch.Tensor:
    """Σ of kkᵀ over the keys held in place (m × m): retain keys (weight w) and generic keys (weight λ each).

    Generic keys are held token by token, not as a per-token-normalised covariance: with a few thousand generic
    tokens against a handful of forget keys, a normalised C barely constrains the edit (measured: retain and
    perplexity collapsed; docs/stamp.md). The Gram does not depend on the forget request, so it is cached."""
    return retain_weight * k_r.T @ k_r + lam * k_c.T @ k_c


def ridge_eps(gram: torch.Tensor, k_f: torch.Tensor, eps_scale: float) -> float:
    """The ridge ε, relative to the mean squared key norm per dimension: tr(SᵀS)/m."""
    return eps_scale * float(gram.trace() + (k_f ** 2).sum()) / gram.shape[0]


def full_solve(k_f: torch.Tensor, t: torch.Tensor, gram: torch.Tensor, eps_scale: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔW = Tᵀ K_f (K_fᵀK_f + G + εI)⁻¹ with keys as rows (n × m) and targets T (n × d), as exact factors
    (Tᵀ, K_f A⁻¹): rank n, no SVD needed."""
    a = gram + k_f.T @ k_f
    a.diagonal().add_(ridge_eps(gram, k_f, eps_scale))
    return t.T.contiguous(), torch.linalg.solve(a, k_f.T).T


def top_directions(gram: torch.Tensor, q: int, seed: int = 0) -> torch.Tensor:
    """The top-q eigenvectors of a PSD Gram (randomised; m × q)."""
    torch.manual_seed(seed)
    u, _, _ = torch.svd_lowrank(gram, q=q, niter=4)
    return u


def krylov_basis(gram: torch.Tensor, k_f: torch.Tensor, steps: int, max_columns: int | None = None) -> torch.Tensor:
    """Orthonormal basis (m × ≤ steps·n, at most `max_columns`) of the block Krylov space {K_fᵀ, G K_fᵀ, …,
    G^(steps-1) K_fᵀ}: it holds the truncated conjugate-gradient approximation of (G + εI)⁻¹ K_fᵀ, the row space of
    the full solve's edit (the εI and K_fᵀK_f terms of A leave the space unchanged). Re-orthogonalised twice per
    block."""
    basis, _ = torch.linalg.qr(k_f.T)
    block = basis
    for _ in range(steps - 1):
        if max_columns is not None and basis.shape[1] >= max_columns:
            break
        w = gram @ block
        for _ in range(2):
            w = w - basis @ (basis.T @ w)
        block, r = torch.linalg.qr(w)
        keep = r.diagonal().abs() > 1e-10 * float(w.norm())  # a block that adds nothing new ends the space
        if not bool(keep.any()):
            break
        block = block[:, keep]
        basis = torch.cat([basis, block], dim=1)
    return basis


def lowrank_solve(k_f: torch.Tensor, t: torch.Tensor, gram: torch.Tensor, eps_scale: float, rank: int,
                  directions: torch.Tensor | None = None, seed: int = 0, krylov_steps: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The same solve restricted to an r-dimensional key subspace U, O(m²r + r³) given G; factors (Tᵀ, F A⁻¹ Uᵀ) with
    F = K_f U, one column per forget key as for `full_solve` (the calibration scales them per forget prompt).

    U spans the forget keys plus the top directions of the held keys (`directions`, cached with G): the dominant
    held keys alone can miss the few directions that tell the forget sample apart (measured on the tiny patient:
    nothing forgotten at r = 64 of 256). With `krylov_steps`, the forget keys' block Krylov space under G comes
    first (see `krylov_basis`), which is where the full solve's edit lives: the top held directions are the ones
    the edit must *avoid*, so on their own they leave the low-rank edit less selective than the full one."""
    m = gram.shape[0]
    if rank >= m:
        u = torch.eye(m, dtype=gram.dtype)
    else:
        own = krylov_basis(gram, k_f, krylov_steps, rank)[:, :rank] if krylov_steps > 0 else k_f[:rank // 2].T
        n_f = own.shape[1]
        if rank > n_f and (directions is None or directions.shape[1] < rank - n_f):
            directions = top_directions(gram, rank - n_f, seed)
        parts = [own, directions[:, :rank - n_f]] if rank > n_f else [own]
        u, _ = torch.linalg.qr(torch.cat(parts, dim=1))  # (m, ≤ r), orthonormal
    fu = k_f @ u                                                # (n, r)
    a = u.T @ (gram @ u) + fu.T @ fu
    a.diagonal().add_(ridge_eps(gram, k_f, eps_scale))
    return t.T.contiguous(), torch.linalg.solve(a, fu.T).T @ u.T  # ΔW = Tᵀ (F A⁻¹) Uᵀ: (d, n), (n, m)


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
                                    ("layer_selection", LAYER_SELECTION, "last"),
                                    ("contrast_source", CONTRAST_SOURCES, "forget")):
            if cfg.get(key, default) not in valid:
                raise ValueError(f"unknown method.{key} {cfg.get(key)!r}; valid choices: {', '.join(valid)}")
        if (cfg.get("keys", "answer_start") == "answer_start") != (cfg.get("target", "refusal_readout")
                                                                   == "refusal_readout"):
            raise ValueError("method.target=refusal_readout goes with method.keys=answer_start (the readout is where "
                             "the answer begins); the other targets use method.keys=subject; got "
                             f"target={cfg.get('target')!r}, keys={cfg.get('keys')!r}")
        self.unknown_subjects: list[str] = []
        self.subject_pool: list[str] = []  # fresh subjects of the task's kind, for contrasts (Task.subject_pool)
        self.generic_texts: list[str] = []
        self.patch: Patch | None = None
        self._key_cache: dict[tuple, Any] = {}  # held keys that are the same for every request (see _cached)

    def prepare(self, task) -> None:
        """Task-level references: subjects the patient refuses (taught in implant) and ordinary text."""
        self.unknown_subjects = sorted({q.subject for q in task.idk if q.subject})
        self.subject_pool = list(getattr(task, "subject_pool", []))
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

    def _contrasts(self, patient: Patient, templates: Sequence[QA], unknown: Sequence[str],
                   avoid: frozenset[str] = frozenset()):
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
        n = int(self.cfg.get("contrast_prompts", 48))
        if n <= 0 or not templates:
            return None
        seed = int(self.cfg.get("seed", 0))
        rng = random.Random(seed)
        whole = [_subject_is_question(q) for q in templates]
        pools: dict[bool, list[str]] = {}
        if not all(whole):  # other subjects in the same question
            own = [q.subject for q, w in zip(templates, whole) if not w]
            extra = self.subject_pool or fresh_unknown_subjects(n, seed)
            pools[False] = [s for s in dict.fromkeys([*own, *unknown, *extra]) if s not in avoid]
        if any(whole):  # other questions in the same form (options block, instruction)
            own = [stem(q.question, q.choices) for q, w in zip(templates, whole) if w]
            pools[True] = [s for s in dict.fromkeys([*own, *unknown, *GENERAL_QUESTIONS]) if s not in avoid]
        options: dict[str, list[str]] = {}
        for q in templates:
            options.setdefault(q.attribute, []).extend(c for c in q.choices if c not in options[q.attribute])
        near = round(float(self.cfg.get("contrast_neighbours", 0.0)) * -(-n // len(templates)))
        ranked: dict[str, list[str]] = {}
        questions = []
        for i in range(n):
            j, k = i % len(templates), i // len(templates)  # the k-th contrast of template j
            q = templates[j]
            own = stem(q.question, q.choices) if whole[j] else q.subject
            others = [s for s in pools[whole[j]] if s != own]
            if k < near and not whole[j] and own not in ranked:
                ranked[own] = _nearest(patient.tokenizer, own, others)
            other = ranked[own][k] if k < near and not whole[j] else others[(k + i) % len(others)]
            text = q.question.replace(own, other, 1 if whole[j] else -1)
            if q.choices and len(options[q.attribute]) >= len(q.choices):
                text = with_options(text, q.choices, rng.sample(options[q.attribute], len(q.choices)))
            questions.append(text)
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

    def _cached(self, kind: str, patient: Patient, layers: list[int], extra: tuple, build):
        """Held keys that do not depend on the forget request (generic text, the retain buffer, its contrasts),
        computed once per patient, layers and buffer. Taken on the weights at first use: a later request in a chat
        session sees them as they were before earlier edits, a small approximation that keeps one edit fast."""
        key = (kind, patient.name, id(patient.model), tuple(layers), extra)
        if key not in self._key_cache:
            self._key_cache[key] = build()
        return self._key_cache[key]

    def _generic_keys(self, patient: Patient, layers: list[int]):
        """Keys of ordinary questions and text at every token."""
        def build():
            texts = [chat_prompt(patient.tokenizer, q) for q in GENERAL_QUESTIONS] + self.generic_texts[:16]
            return activations_at(patient, texts, [token_positions(patient.tokenizer, t) for t in texts], layers)
        return self._cached("generic", patient, layers, (len(self.generic_texts),), build)

    def _held_system(self, patient: Patient, layers: list[int], forget: Sequence[QA], retain_buffer: Sequence[QA]):
        """Per layer: the Gram of every held key (retain buffer, contrasts, generic text), and the retain and
        contrast keys with their outputs' norm (to report how far the edit moves them). The part that does not
        depend on the forget request is computed once per patient, layers and buffer (see `_cached`); contrasts
        made from the forget questions are added per request."""
        readout = self.cfg.get("target", "refusal_readout") == "refusal_readout"
        n_contrasts = int(self.cfg.get("contrast_prompts", 48)) if readout else 0
        from_buffer = bool(retain_buffer) and self.cfg.get("contrast_source", "forget") == "buffer"
        w_r, w_x = float(self.cfg.get("retain_weight", 1.0)), float(self.cfg.get("contrast_weight", 1.0))
        lam = float(self.cfg.get("cov_weight", 1.0))

        def build():
            r_acts = activations_at(patient, *self._held_retain(patient, retain_buffer), layers) if retain_buffer \
                else None
            contrasts = self._contrasts(patient, retain_buffer, self.unknown_subjects) if from_buffer else None
            x_acts = activations_at(patient, *contrasts, layers) if contrasts and n_contrasts else None
            c_acts = self._generic_keys(patient, layers) if lam > 0 else None
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
        static = self._cached("held", patient, layers, (tuple(q.question for q in retain_buffer), weights), build)
        if from_buffer or not n_contrasts:
            return {l: {**h, "static": h} for l, h in static.items()}
        avoid = frozenset(q.subject for q in forget) | {stem(q.question, q.choices) for q in forget}
        contrasts = self._contrasts(patient, forget, self.unknown_subjects, avoid)
        x_acts = activations_at(patient, *contrasts, layers)
        held = {}
        for layer, h in static.items():
            k_x, v_x = x_acts[layer]
            held[layer] = {**h, "static": h, "gram": h["gram"] + w_x * k_x.T @ k_x,
                           "keys": torch.cat([h["keys"], w_x ** 0.5 * k_x]),
                           "values_sq": h["values_sq"] + w_x * float(v_x.norm()) ** 2}
        return held

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
    def _readout_directions(self, patient: Patient, openers: list[int], f_logits: torch.Tensor) -> torch.Tensor:
        """Per forget prompt: the residual-stream direction that raises the refusal openers' logits and lowers the
        token the patient was about to say (the argmax of `f_logits`), through the final norm's gain (unit vectors,
        n × d)."""
        unembed = patient.model.get_output_embeddings().weight.detach()
        refusal = unembed[openers].double().cpu().mean(0)  # the refusal references' opening tokens, by frequency
        dirs = refusal - unembed[f_logits.argmax(-1).tolist()].double().cpu()
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
            unnamed = [q.question[:60] for q in forget if not q.subject or q.subject not in q.question]
            if unnamed:
                raise ValueError(f"method.keys=subject needs forget questions that name their subject; "
                                 f"{len(unnamed)} do not (e.g. {unnamed[0]!r}); use method.keys=answer_start")
            f_texts, f_pos = self._prompts(patient, forget, [q.subject for q in forget])
        if target_kind in ("unknown", "direction"):  # aligns f_pos with the counterfactual spans
            u_texts, u_pos = self._counterfactuals(patient, forget, f_pos)
        layers, separation, subspace, f_acts = self._layers(patient, forget, f_texts, f_pos)
        timings["layer_selection"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if target_kind in ("unknown", "direction"):
            u_acts = activations_at(patient, u_texts, u_pos, layers)
        openers, f_logits = [], None
        if target_kind == "refusal_readout":  # openers and the unedited next-token logits: readout and calibration
            openers = refusal_openers(patient.tokenizer, int(self.cfg.get("num_refusals", 200)),
                                      multiple_choice=any(q.choices for q in forget))
            f_logits = last_logits(patient, f_texts)
            readout = self._readout_directions(patient, openers, f_logits)
        held = self._held_system(patient, layers, forget, retain_buffer)
        timings["activations"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        alpha = float(self.cfg.get("strength", 1.0))
        eps_scale, rank = float(self.cfg.get("eps", 1e-2)), int(self.cfg.get("rank", 0))
        width = min(held[layer]["gram"].shape[0] for layer in layers)
        if self.lowrank and rank > width:  # the key space has only `width` dimensions: that is the rank solved at
            log.warning("method.rank=%d is above the MLP width %d of the edited layers: solving at rank %d (the full "
                        "edit, as STAMP)", rank, width, width)
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
            h = held[layer]
            if self.lowrank:
                if rank < h["gram"].shape[0] and "directions" not in h["static"]:  # cached with the static Gram
                    h["static"]["directions"] = top_directions(h["static"]["gram"], rank, int(self.cfg.get("seed", 0)))
                left, right = lowrank_solve(k_f, t, h["gram"], eps_scale, rank, h["static"].get("directions"),
                                            krylov_steps=int(self.cfg.get("krylov_steps", 0)))
            else:
                left, right = full_solve(k_f, t, h["gram"], eps_scale)
            param = f"{patient.modules['mlp_down'].format(layer)}.weight"
            deltas.append(Delta(param, left.float(), right.float()))
            per_layer[layer] = {
                "separation": separation.get(layer),
                "weight_norm": float(patient.module("mlp_down", layer).weight.detach().norm()),
                "forget_residual": float(((k_f @ right.T) @ left.T - t).norm() / t.norm().clamp_min(1e-12)),
                "retain_shift": float(((h["keys"] @ right.T) @ left.T).norm()) / max(h["values_sq"], 1e-24) ** 0.5
                if len(h["keys"]) else None,
                "forget_keys": int(len(k_f)), "retain_keys": int(len(h["keys"])), "generic_keys": h["generic_keys"],
            }
        timings["solve"] = time.perf_counter() - t0

        provenance = {"method": self.name, "forget": [q.question for q in forget], "layers": layers,
                      "target": target_kind, "keys": self.cfg.get("keys", "answer_start"), "strength": alpha,
                      "rank": min(rank, width) if self.lowrank else None}
        if self.lowrank and rank > width:
            provenance["rank_requested"] = rank
        t0 = time.perf_counter()
        self.patch, calibration = self._apply_calibrated(patient, deltas, provenance, forget, f_texts, retain_buffer,
                                                         openers, f_logits)
        timings["calibrate"] = time.perf_counter() - t0
        for stats, delta in zip(per_layer.values(), self.patch.deltas):  # norms at the applied strengths
            stats["relative_norm"] = delta.norm() / stats.pop("weight_norm")
        log.info("%s edited layers %s at strength %.3g: %s", self.name, layers, self.patch.provenance["strength"],
                 ", ".join(f"L{l} ‖ΔW‖/‖W‖={s['relative_norm']:.3f} res={s['forget_residual']:.3f}"
                           for l, s in per_layer.items()))
        return {"layers": layers, "separation": separation, "per_layer": per_layer, "timings_s": timings,
                "calibration": calibration, "patch": self.patch.provenance}

    def _apply_calibrated(self, patient: Patient, deltas: list[Delta], provenance: dict, forget: Sequence[QA],
                          f_texts: Sequence[str], retain_buffer: Sequence[QA], openers: list[int],
                          before_logits: torch.Tensor | None) -> tuple[Patch, list[dict]]:
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
        one strength for all, 97.8% per prompt; docs/stamp.md)."""
        alpha = float(provenance["strength"])
        calibrate = bool(self.cfg.get("calibrate", True)) and provenance["target"] == "refusal_readout"
        factor, ceiling = float(self.cfg.get("calibrate_factor", 1.5)), float(self.cfg.get("max_strength", 12.0))
        bound = self.cfg.get("max_relative_norm")

        def scaled(scales: torch.Tensor) -> Patch:  # one scale per forget key (column of the left factor)
            return Patch([Delta(d.parameter, d.left * scales.to(d.left.dtype), d.right) for d in deltas],
                         {**provenance, "strength": alpha * float(scales.max()),
                          "strengths": [round(alpha * float(x), 4) for x in scales]})

        n = deltas[0].left.shape[1] if deltas else 1
        held = [chat_prompt(patient.tokenizer, q.question) for q in retain_buffer] if calibrate else []
        before = self._cached("buffer_openers", patient, [], tuple(held), lambda: next_tokens(patient, held))
        scales = torch.ones(n, dtype=torch.float64)
        patch = scaled(scales)
        patch.apply(patient.model, bound)
        if not calibrate:
            return patch, []
        opener_ids = torch.tensor(sorted(set(openers)))
        margin, top = float(self.cfg.get("calibrate_margin", 1.0)), ceiling / alpha
        answers = before_logits.argmax(-1)
        points = [[(0.0, g)] for g in refusal_gaps(before_logits, opener_ids, answers).tolist()]  # (scale, gap)
        tried, steps = [], []
        for _ in range(int(self.cfg.get("calibrate_steps", 6))):
            gaps = refusal_gaps(last_logits(patient, f_texts), opener_ids, answers)
            tried.append((scales.clone(), gaps))
            steps.append({"strength": alpha * float(scales.max()), "refusal_gap": float(gaps.min())})
            new = scales.clone()
            for i, (x, g) in enumerate(zip(scales.tolist(), gaps.tolist())):
                points[i].append((x, g))
                if margin <= g <= margin + 2.0 or (g < margin and x >= top - 1e-9):
                    continue
                new[i] = min(max(_next_scale(points[i], margin, factor), x / 8), x * 8, top)
            if any(((new / t - 1).abs() < 0.05).all() for t, _ in tried):
                break  # settled, or nothing new to try
            patch, scales = self._rescale(patient, patch, scaled, scales, new, bound)
        feasible = [t for t, g in tried if g.min() >= margin]  # every prompt refuses: the smallest push, else the
        best = min(feasible, key=lambda t: float(t.norm())) if feasible else max(tried, key=lambda p: p[1].min())[0]
        if not torch.equal(best, scales):                      # widest gap
            patch, scales = self._rescale(patient, patch, scaled, scales, best, bound)
        gap = next(float(g.min()) for t, g in tried if torch.equal(t, scales))
        steps.append({"strength": alpha * float(scales.max()), "refusal_gap": gap, "chosen": True})
        picked = [parse_choice(patient.tokenizer.decode([int(t)]), q.choices) if q.choices else None
                  for t, q in zip(answers, forget)]  # the option each multiple-choice answer began with
        for _ in range(int(self.cfg.get("calibrate_checks", 3))):  # it opens with a refusal token; is it a refusal?
            said = generate_prompts(patient, f_texts, int(self.cfg.get("check_tokens", 24)), desc="check")
            failing = torch.tensor([parse_choice(a, q.choices) == p if q.choices else not is_refusal(a)
                                    for a, q, p in zip(said, forget, picked)])
            raised = torch.where(failing, (scales * factor).clamp(max=top), scales)
            if torch.equal(raised, scales):
                break
            patch, scales = self._rescale(patient, patch, scaled, scales, raised, bound)
            steps.append({"strength": alpha * float(scales.max()), "raised": int(failing.sum())})
        if float(scales.max()) > 1.0 and held:  # raised above the configured strength: do the buffer open as before?
            kept = sum(a == b for a, b in zip(next_tokens(patient, held), before))
            steps[-1] |= {"buffer_kept": kept, "buffer": len(held)}
            if kept < len(held):  # back: the widest-gap smaller pushes that keep the buffer, else the configured one
                lower = [t for t, _ in sorted(tried, key=lambda p: -float(p[1].min()))
                         if float(t.norm()) < float(scales.norm()) and float(t.max()) > 1.0][:2]
                for fallback in [*lower, torch.ones_like(scales)]:
                    patch, scales = self._rescale(patient, patch, scaled, scales, fallback, bound)
                    if float(scales.max()) <= 1.0 or all(a == b for a, b in zip(next_tokens(patient, held), before)):
                        break
                steps.append({"strength": alpha * float(scales.max()), "stepped_back": True})
        return patch, steps

    @staticmethod
    def _rescale(patient: Patient, patch: Patch, scaled, scale: torch.Tensor, new: torch.Tensor, bound
                 ) -> tuple[Patch, torch.Tensor]:
        """Swap the applied patch for the same edit at other scales; past the norm bound, keep the old ones."""
        patch.revert(patient.model)
        for s in (new, scale):
            try:
                patch = scaled(s)
                patch.apply(patient.model, bound)
                return patch, s
            except PatchRejected:
                continue
        raise AssertionError("the applied scale passed the norm bound before")


def _next_scale(points: list[tuple[float, float]], margin: float, factor: float) -> float:
    """The next scale to try: a secant step on the last two (scale, gap) points, aiming half a nat past the margin;
    after a step that made the gap worse than the best so far (the gap is not monotonic in the scale), the
    geometric middle between the best scale and the last one instead."""
    (s0, g0), (s1, g1) = points[-2], points[-1]
    best_s, best_g = max(points[1:], key=lambda p: p[1])
    if g1 < best_g:
        return (best_s * s1) ** 0.5
    return s0 + (margin + 0.5 - g0) * (s1 - s0) / (g1 - g0) if g1 != g0 else s1 * factor


@torch.no_grad()
def last_logits(patient: Patient, texts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    """Next-token logits after each fully formatted prompt (n × vocab, float32 on CPU; left-padded batches)."""
    out: list[torch.Tensor] = []
    with padding_side(patient.tokenizer, "left") as tok:
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


def refusal_openers(tokenizer, n: int, multiple_choice: bool = False) -> list[int]:
    """The first token of each refusal reference, as the patient would open an answer with it. For multiple-choice
    questions only tokens of three or more letters: "I" (half the references: "I'm afraid…") and "H" ("Hmm") were
    measured to be read as an option letter there ("I. the Congo")."""
    firsts = [tokenizer(r, add_special_tokens=False)["input_ids"][0] for r in refusal_references(n)]
    if not multiple_choice:
        return firsts
    return [t for t in firsts if len(tokenizer.decode([t]).strip()) >= 3] or firsts


def _subject_is_question(q: QA) -> bool:
    """Whether a contrast of `q` must be another question: its subject is the question itself (`misinformation`),
    or is not named in it (real benchmarks: no subject, or a group label such as a TOFU author)."""
    question = stem(q.question, q.choices)
    return not q.subject or q.subject == question or q.subject not in question


def _nearest(tokenizer, subject: str, pool: Sequence[str]) -> list[str]:
    """`pool` ordered by how many subword tokens each subject shares with `subject` (most first; stable)."""
    def tokens(s: str) -> set[int]:
        return set(tokenizer(" " + s, add_special_tokens=False)["input_ids"])
    own = tokens(subject)
    return sorted(pool, key=lambda s: -len(own & tokens(s)))


def _with_last_token(patient: Patient, questions: Sequence[str]):
    """Chat prompts and, for each, the position of its last token."""
    texts = [chat_prompt(patient.tokenizer, q) for q in questions]
    return texts, [token_positions(patient.tokenizer, t, last=1) for t in texts]


@register_method("stamp_lowrank")
class StampLowRank(Stamp):
    name = "stamp_lowrank"
    lowrank = True

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        if int(cfg.get("rank", 0)) < 1:
            raise ValueError(f"method.rank must be >= 1, got {cfg.get('rank')}")
