"""MLP activations, the refusal subspace, and layer selection by forget/refusal separation.

Keys are the inputs of a layer's down projection (act(gate(x)) ⊙ up(x)), values its outputs: the closed-form edit
maps forget keys to new values. The refusal subspace is where the patient's MLP outputs live while it refuses.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from repair.data import chat_prompt
from repair.patient import Patient

log = logging.getLogger(__name__)


@contextlib.contextmanager
def capture_down_proj(patient: Patient, layers: Sequence[int], take: Callable[[int, torch.Tensor, torch.Tensor], None]):
    """During the forward passes inside the block, hand each layer's `mlp_down` (keys, values), as (batch,
    positions, width), to `take(layer, keys, values)` as soon as the layer has run: nothing of a layer is kept
    past it unless `take` keeps it. A family that flattens the MLP input to one row per token (OPT) gets its
    positions back from the shape of the block's input."""
    shapes: dict[int, torch.Size] = {}
    hooks = []
    for layer in layers:
        def block_input(module, args, kwargs, layer=layer):
            hidden = args[0] if args else kwargs.get("hidden_states")
            shapes[layer] = hidden.shape[:-1]

        def hook(module, inputs, output, layer=layer):
            keys, values = inputs[0].detach(), output.detach()
            if keys.dim() == 2:  # (batch × positions, width)
                keys, values = keys.reshape(*shapes[layer], -1), values.reshape(*shapes[layer], -1)
            take(layer, keys, values)
        hooks.append(patient.module("layers", layer).register_forward_pre_hook(block_input, with_kwargs=True))
        hooks.append(patient.module("mlp_down", layer).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def last_logits_only(model) -> dict:
    """`logits_to_keep=1` where the model supports it: the output head over one position, not the whole prompt."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _for_each_batch(patient: Patient, texts: Sequence[str], positions: Sequence[Sequence[int]], layers: Sequence[int],
                    batch_size: int, take: Callable[[int, torch.Tensor, torch.Tensor], None]) -> None:
    """Forward passes over right-padded batches of prompts; `take(layer, keys, values)` gets each layer's rows at
    the batch's positions (n_rows × width, on the patient's device in its dtype) while the pass runs."""
    tok = patient.tokenizer
    for start in range(0, len(texts), batch_size):
        enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[start:start + batch_size]]
        rows = [(i, j) for i, p in enumerate(positions[start:start + batch_size]) for j in p]
        ids = torch.full((len(enc), max(len(e) for e in enc)), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, :len(e)], mask[i, :len(e)] = torch.tensor(e), 1
        batch_idx = torch.tensor([i for i, _ in rows], dtype=torch.long, device=patient.device)
        token_idx = torch.tensor([j for _, j in rows], dtype=torch.long, device=patient.device)

        def at_positions(layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
            take(layer, keys[batch_idx, token_idx], values[batch_idx, token_idx])

        with capture_down_proj(patient, layers, at_positions):
            patient.model(input_ids=ids.to(patient.device), attention_mask=mask.to(patient.device),
                          **last_logits_only(patient.model))  # the hooks need no logits


@torch.no_grad()
def activations_at(patient: Patient, texts: Sequence[str], positions: Sequence[Sequence[int]], layers: Sequence[int],
                   batch_size: int = 16, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
                   ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Keys (n, m) and values (n, d) at the given token positions of each text, per layer (float64 on the CPU
    unless `dtype`/`device` say otherwise)."""
    keys: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    values: dict[int, list[torch.Tensor]] = {l: [] for l in layers}

    def take(layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        keys[layer].append(k.to(device=device, dtype=dtype))
        values[layer].append(v.to(device=device, dtype=dtype))

    _for_each_batch(patient, list(texts), positions, layers, batch_size, take)
    return {l: (torch.cat(keys[l]), torch.cat(values[l])) for l in layers}


@torch.no_grad()
def gram_at(patient: Patient, texts: Sequence[str], positions: Sequence[Sequence[int]], layers: Sequence[int],
            devices: dict[int, torch.device | str], dtype: torch.dtype = torch.float32, batch_size: int = 16
            ) -> tuple[dict[int, torch.Tensor], int]:
    """Σ kkᵀ over the keys at the given positions (m × m per layer, on that layer's device in `dtype`), summed batch
    by batch so that the keys themselves are never all kept; and how many keys went in."""
    grams: dict[int, torch.Tensor] = {}

    def take(layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        k = k.to(device=devices[layer], dtype=dtype)
        if layer not in grams:
            grams[layer] = torch.zeros(k.shape[1], k.shape[1], dtype=dtype, device=devices[layer])
        grams[layer].addmm_(k.T, k)

    _for_each_batch(patient, list(texts), positions, layers, batch_size, take)
    return grams, sum(len(p) for p in positions)


def token_positions(tokenizer, text: str, span: str | None = None, last: int | None = None) -> list[int]:
    """Token indices of `span` inside `text` (its last occurrence), or of all tokens; keep the final `last`."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if span:
        start = text.rfind(span)
        if start < 0:
            raise ValueError(f"span {span!r} not found in the prompt")
        end = start + len(span)
        idx = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    else:
        idx = list(range(len(offsets)))
    return idx[-last:] if last else idx


def answer_positions(tokenizer, prompt: str, answer: str) -> tuple[str, list[int]]:
    """The prompt followed by the answer, and the token positions that predict the answer's tokens."""
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    text = prompt + answer
    n_total = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return text, list(range(n_prompt - 1, n_total - 1))


@dataclass
class RefusalSubspace:
    """Per layer: the mean MLP output while refusing and its top principal directions (d × k)."""

    mean: dict[int, torch.Tensor]
    basis: dict[int, torch.Tensor]

    def project(self, layer: int, values: torch.Tensor) -> torch.Tensor:
        """Move values into the affine refusal subspace: μ + U Uᵀ (v − μ)."""
        mu, u = self.mean[layer], self.basis[layer]
        return mu + (values - mu) @ u @ u.T


def refusal_subspace(patient: Patient, questions: Sequence[str], refusals: Sequence[str], layers: Sequence[int],
                     rank: int = 8) -> RefusalSubspace:
    """MLP outputs on the answer tokens of refusal responses to `questions` → mean + top-`rank` directions."""
    texts, positions = [], []
    for i, refusal in enumerate(refusals):
        text, pos = answer_positions(patient.tokenizer, chat_prompt(patient.tokenizer, questions[i % len(questions)]),
                                     refusal)
        texts.append(text)
        positions.append(pos)
    acts = activations_at(patient, texts, positions, layers)
    mean, basis = {}, {}
    for layer, (_, values) in acts.items():
        mu = values.mean(0)
        _, _, vh = torch.linalg.svd(values - mu, full_matrices=False)
        mean[layer], basis[layer] = mu, vh[:rank].T
    return RefusalSubspace(mean, basis)


def layer_separation(forget_values: dict[int, torch.Tensor], subspace: RefusalSubspace) -> dict[int, float]:
    """1 − cos(mean forget MLP output, mean refusal MLP output) per layer (the paper's Fig. 5 analysis)."""
    out = {}
    for layer, values in forget_values.items():
        cos = torch.nn.functional.cosine_similarity(values.mean(0), subspace.mean[layer], dim=0)
        out[layer] = float(1.0 - cos)
    return out
