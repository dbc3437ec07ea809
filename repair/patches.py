"""Reversible weight patches: low-rank deltas with provenance. apply → revert restores the weights bit for bit.

A patch keeps the original tensors it replaced while applied (in memory), so revert is exact; a saved patch holds
only its factors and provenance, so it is small and can be applied to a fresh copy of the same base weights.
Patches stack: revert them newest first. A revert checks (by a hash of the bytes) that the weights it restores are
still exactly as its apply left them, and refuses otherwise, rather than wiping out a later patch or edit.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from repair.io import atomic_path


class PatchRejected(ValueError):
    """A patch failed a guard rail (NaN/Inf, norm bound); the model was left unchanged."""


class PatchConflict(RuntimeError):
    """A revert found the weights changed since the patch was applied (a later patch, training); nothing changed."""


def _fingerprint(tensor: torch.Tensor) -> str:
    """A hash of the tensor's exact bytes (dtype and shape included): equal iff bit for bit equal."""
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
    digest = hashlib.blake2b(data, digest_size=16)
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    return digest.hexdigest()


@dataclass
class Delta:
    """ΔW = left @ right for one weight matrix (e.g. `model.layers.7.mlp.down_proj.weight`). `transposed`: the
    weight is stored (in, out), as a `Conv1D`'s (GPT-2), and takes (left @ right)ᵀ; the factors keep one meaning."""

    parameter: str
    left: torch.Tensor   # (out, r)
    right: torch.Tensor  # (r, in)
    transposed: bool = False

    def dense(self, dtype=torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """The change in the weight's own layout (formed on `device`, the factors' by default)."""
        device = self.left.device if device is None else device
        product = (self.left.to(device, torch.float64) @ self.right.to(device, torch.float64)).to(dtype)
        return product.T if self.transposed else product

    @property
    def shape(self) -> tuple[int, int]:
        """The shape of the weight it changes, in the weight's layout."""
        out, inp = self.left.shape[0], self.right.shape[1]
        return (inp, out) if self.transposed else (out, inp)

    def norm(self) -> float:
        """‖left @ right‖_F from the factors: sqrt(Σ (LᵀL) ⊙ (RRᵀ))."""
        left, right = self.left.to(torch.float64), self.right.to(torch.float64)
        return float(((left.T @ left) * (right @ right.T)).sum().clamp_min(0) ** 0.5)


@dataclass
class Patch:
    deltas: list[Delta]
    provenance: dict[str, Any] = field(default_factory=dict)
    _originals: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _applied: dict[str, str] = field(default_factory=dict, repr=False)  # parameter → fingerprint after apply

    @property
    def applied(self) -> bool:
        return bool(self._originals)

    def check(self, model, max_relative_norm: float | None = None,
              weights: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """Validate every delta before touching the model; returns ‖ΔW‖/‖W‖ per parameter, W the model's weight or,
        where `weights` has it, that one (the unpatched weight, when a patch replaces another)."""
        params = dict(model.named_parameters())
        ratios = {}
        for d in self.deltas:
            if d.parameter not in params:
                raise PatchRejected(f"patch edits unknown parameter {d.parameter!r}")
            if d.shape != tuple(params[d.parameter].shape) or d.left.shape[1] != d.right.shape[0]:
                layout = ", transposed" if d.transposed else ""
                raise PatchRejected(f"delta for {d.parameter} has shape {d.shape} (factors {tuple(d.left.shape)} @ "
                                    f"{tuple(d.right.shape)}{layout}), weight has {tuple(params[d.parameter].shape)}")
            norm = d.norm()  # from the factors: no dense product needed to check
            if not (torch.isfinite(d.left).all() and torch.isfinite(d.right).all() and math.isfinite(norm)):
                raise PatchRejected(f"delta for {d.parameter} contains NaN or Inf; nothing was changed")
            weight = (weights or {}).get(d.parameter, params[d.parameter]).detach()
            ratio = norm / float(weight.float().norm().clamp_min(1e-12))
            if max_relative_norm is not None and ratio > max_relative_norm:
                raise PatchRejected(f"delta for {d.parameter} has ‖ΔW‖/‖W‖ = {ratio:.3g} > the bound "
                                    f"{max_relative_norm} (method.max_relative_norm); nothing was changed")
            ratios[d.parameter] = ratio
        return ratios

    @torch.no_grad()
    def apply(self, model, max_relative_norm: float | None = None) -> dict[str, float]:
        if self.applied:
            raise RuntimeError("patch is already applied")
        ratios = self.check(model, max_relative_norm)
        params = dict(model.named_parameters())
        for d in self.deltas:  # the weights before any delta (two deltas may share one), in host memory, where a
            if d.parameter not in self._originals:  # chat's patches pile up without taking GPU memory
                self._originals[d.parameter] = params[d.parameter].detach().to("cpu", copy=True)
        self._add_deltas(params)
        return ratios

    def _add_deltas(self, params: dict[str, torch.nn.Parameter]) -> None:
        """Add every delta to its weight and fingerprint the result (what `revert` checks)."""
        for d in self.deltas:
            p = params[d.parameter]
            p.add_(d.dense(p.dtype, p.device))
        self._applied = {name: _fingerprint(params[name]) for name in self._originals}
        self.provenance.setdefault("applied_at", time.time())

    @torch.no_grad()
    def replace(self, model, other: "Patch", max_relative_norm: float | None = None) -> "Patch":
        """Put `other` (deltas on the same weights) on the model in this patch's place and return it: the same
        weights, bit for bit, as `revert` then `other.apply`, without copying the originals again (the calibration
        swaps strengths this way). `other` is validated first; if it is rejected, this patch stays applied."""
        if not self.applied:
            raise RuntimeError("patch is not applied")
        if {d.parameter for d in other.deltas} != set(self._originals):
            raise ValueError("replace needs a patch of the same weights")
        other.check(model, max_relative_norm, self._originals)  # against the weights as they were, as apply does
        params = dict(model.named_parameters())
        for name, original in self._originals.items():
            params[name].copy_(original)
        other._originals, self._originals, self._applied = self._originals, {}, {}
        other._add_deltas(params)
        return other

    @torch.no_grad()
    def revert(self, model) -> None:
        """Restore the weights this patch replaced, bit for bit. Refuses (PatchConflict, nothing changed) when
        they changed since this patch was applied: patches must be reverted newest first."""
        if not self.applied:
            raise RuntimeError("patch is not applied")
        params = dict(model.named_parameters())
        for name in self._originals:
            if name not in params:
                raise PatchConflict(f"cannot revert: the model has no parameter {name!r} (is this the model the "
                                    "patch was applied to?); nothing was changed")
            if name in self._applied and _fingerprint(params[name]) != self._applied[name]:
                raise PatchConflict(
                    f"cannot revert: {name} changed since this patch was applied (another patch applied after it, "
                    "or the weights were edited); reverting now would wipe out that change. Patches must be "
                    "reverted in reverse order of application, newest first; nothing was changed")
        for name, original in self._originals.items():
            params[name].copy_(original)
        self._originals.clear()
        self._applied.clear()

    def save(self, path: str | Path) -> None:
        tensors = {}
        for i, d in enumerate(self.deltas):
            tensors[f"{i}.left"], tensors[f"{i}.right"] = d.left.contiguous().cpu(), d.right.contiguous().cpu()
        meta = {"parameters": json.dumps([d.parameter for d in self.deltas]),
                "transposed": json.dumps([d.parameter for d in self.deltas if d.transposed]),
                "provenance": json.dumps(self.provenance, default=str)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "Patch":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "parameters" not in meta:
            raise ValueError(f"{path}: not a RePAIR patch (missing 'parameters' metadata; a patch is written by "
                             "Patch.save)")
        try:
            names = json.loads(meta["parameters"])
            provenance = json.loads(meta.get("provenance") or "{}")
            transposed = set(json.loads(meta.get("transposed") or "[]"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a RePAIR patch (unreadable metadata: {err})") from err
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError(f"{path}: not a RePAIR patch ('parameters' metadata is not a list of names)")
        tensors = load_file(str(path))
        expected = {f"{i}.{side}" for i in range(len(names)) for side in ("left", "right")}
        if set(tensors) != expected:
            pairs = len({k.split(".")[0] for k in tensors})
            raise ValueError(f"{path}: damaged patch: the metadata names {len(names)} parameters but the file holds "
                             f"{len(tensors)} tensors ({pairs} left/right pairs); expected exactly one `i.left` and "
                             "one `i.right` per name")
        deltas = [Delta(n, tensors[f"{i}.left"], tensors[f"{i}.right"], n in transposed) for i, n in enumerate(names)]
        return cls(deltas, provenance if isinstance(provenance, dict) else {})
