"""The closed-form solve: per edited layer, forget keys K_f (rows) are mapped to targets T while the held keys (retain
buffer, contrasts, generic text; their Gram G) stay put, as in the MEMIT family:

    ΔW = Tᵀ K_f (K_fᵀK_f + G + εI)⁻¹

`full_solve` is STAMP's; `lowrank_solve` is STAMP-LR's, the same problem inside an r-dimensional key subspace
(O(m²r + r³) given G instead of O(m³)). Both return the edit as two factors, one column per forget key, so the
calibration can rescale each forget prompt's push without solving again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def held_gram(k_r: torch.Tensor, k_c: torch.Tensor, retain_weight: float, lam: float) -> torch.Tensor:
    """Σ of kkᵀ over the keys held in place (m × m): retain keys (weight w) and generic keys (weight λ each).

    Generic keys are held token by token, not as a per-token-normalised covariance: with a few thousand generic
    tokens against a handful of forget keys, a normalised C barely constrains the edit (measured: retain and
    perplexity collapsed; docs/stamp.md). The Gram does not depend on the forget request, so it is cached."""
    return retain_weight * k_r.T @ k_r + lam * k_c.T @ k_c


@dataclass
class HeldGram:
    """G = static + extraᵀ·extra, kept as its parts: a request adds its few keys (contrasts, weights folded in) to
    the cached, request-independent Gram without copying it. STAMP-LR only multiplies by G, so it never forms a
    full-width matrix per request; STAMP forms one, the system it factors. `static` may sit in host memory (over
    the device budget, `method.gram_budget_gb`): it comes to the solve's device for the products."""

    static: torch.Tensor
    extra: torch.Tensor | None = None

    @property
    def width(self) -> int:
        return self.static.shape[0]

    def trace(self) -> float:
        return float(self.static.trace()) + (float((self.extra ** 2).sum()) if self.extra is not None else 0.0)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.static.to(x.device) @ x
        return out if self.extra is None else out.addmm_(self.extra.T, self.extra @ x)

    def plus(self, rows: torch.Tensor) -> torch.Tensor:
        """G + rowsᵀ·rows as one new m × m matrix on the rows' device."""
        rows = rows if self.extra is None else torch.cat([self.extra, rows])
        return torch.addmm(self.static.to(rows.device), rows.T, rows)


def as_held(gram: "torch.Tensor | HeldGram") -> HeldGram:
    return gram if isinstance(gram, HeldGram) else HeldGram(gram)


def ridge_eps(gram: "torch.Tensor | HeldGram", k_f: torch.Tensor, eps_scale: float) -> float:
    """The ridge ε, relative to the mean squared key norm per dimension: tr(SᵀS)/m."""
    gram = as_held(gram)
    return eps_scale * (gram.trace() + float((k_f ** 2).sum())) / gram.width


def spd_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A⁻¹B for the symmetric positive definite A of the solve (a Gram plus εI): by Cholesky, half the work of LU;
    by LU where rounding made A numerically indefinite."""
    factor, info = torch.linalg.cholesky_ex(a)
    return torch.cholesky_solve(b, factor) if int(info) == 0 else torch.linalg.solve(a, b)


def full_solve(k_f: torch.Tensor, t: torch.Tensor, gram: "torch.Tensor | HeldGram", eps_scale: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔW = Tᵀ K_f (K_fᵀK_f + G + εI)⁻¹ with keys as rows (n × m) and targets T (n × d), as exact factors
    (Tᵀ, K_f A⁻¹): rank n, no SVD needed. Computed on the keys' device in their dtype."""
    gram = as_held(gram)
    a = gram.plus(k_f)
    a.diagonal().add_(ridge_eps(gram, k_f, eps_scale))
    return t.T.contiguous(), spd_solve(a, k_f.T).T


def top_directions(gram: torch.Tensor, q: int, seed: int = 0) -> torch.Tensor:
    """The top-q eigenvectors of a PSD Gram (randomised with `seed`; m × q). The global random state is left as it
    was."""
    with torch.random.fork_rng(devices=[gram.device] if gram.is_cuda else []):
        torch.manual_seed(seed)
        u, _, _ = torch.svd_lowrank(gram, q=q, niter=4)
    return u


def krylov_basis(gram: "torch.Tensor | HeldGram", k_f: torch.Tensor, steps: int, max_columns: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis Q (m × ≤ steps·n, at most `max_columns`) of the block Krylov space {K_fᵀ, G K_fᵀ, …,
    G^(steps-1) K_fᵀ}, and G Q: the space holds the truncated conjugate-gradient approximation of (G + εI)⁻¹ K_fᵀ,
    the row space of the full solve's edit (the εI and K_fᵀK_f terms of A leave the space unchanged).
    Re-orthogonalised twice per block. G Q comes from the products the recurrence computes anyway (plus one for the
    last block), so QᵀGQ costs O(m r²), not the O(m² r) of multiplying G by Q again."""
    basis, _ = torch.linalg.qr(k_f.T)
    block, products = basis, []
    while True:
        w = gram @ block
        products.append(w)
        if len(products) >= steps or (max_columns is not None and basis.shape[1] >= max_columns):
            break
        for _ in range(2):
            w = w - basis @ (basis.T @ w)
        block, r = torch.linalg.qr(w)
        keep = r.diagonal().abs() > 1e-10 * float(w.norm())  # a block that adds nothing new ends the space
        if not bool(keep.any()):
            break
        block = block[:, keep]
        basis = torch.cat([basis, block], dim=1)
    return basis, torch.cat(products, dim=1)[:, :basis.shape[1]]


def lowrank_solve(k_f: torch.Tensor, t: torch.Tensor, gram: "torch.Tensor | HeldGram", eps_scale: float, rank: int,
                  directions: torch.Tensor | Callable[[], torch.Tensor] | None = None, seed: int = 0,
                  krylov_steps: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same solve restricted to an r-dimensional key subspace U, O(m²r + r³) given G; factors (Tᵀ, F A⁻¹ Uᵀ) with
    F = K_f U, one column per forget key as for `full_solve` (the calibration scales them per forget prompt).

    U spans the forget keys plus the top directions of the held keys (`directions`, cached with G): the dominant
    held keys alone can miss the few directions that tell the forget sample apart (measured on the tiny patient:
    nothing forgotten at r = 64 of 256). With `krylov_steps`, the forget keys' block Krylov space under G comes
    first (see `krylov_basis`), which is where the full solve's edit lives: the top held directions are the ones
    the edit must *avoid*, so on their own they leave the low-rank edit less selective than the full one.
    `directions` may be a function that computes them: it is called only when the forget keys' own space leaves
    room for them (with Krylov steps it often fills the rank alone, and a top-directions SVD of a full-width Gram
    cost 7× the whole low-rank solve at width 1536)."""
    gram = as_held(gram)
    m = gram.width
    gu = None  # G U, where the Krylov recurrence has it already
    if rank >= m:
        u = torch.eye(m, dtype=k_f.dtype, device=k_f.device)
    else:
        if krylov_steps > 0:
            own, gu = krylov_basis(gram, k_f, krylov_steps, rank)
            own, gu = own[:, :rank], gu[:, :rank]
        else:
            own = k_f[:rank // 2].T
        n_f = own.shape[1]
        if rank > n_f and callable(directions):
            directions = directions()
        if rank > n_f and (directions is None or directions.shape[1] < rank - n_f):
            directions = top_directions(gram.static, rank - n_f, seed)
        if rank > n_f or gu is None:  # the space is more than the (orthonormal) Krylov basis
            parts = [own, directions[:, :rank - n_f].to(own)] if rank > n_f else [own]
            u, _ = torch.linalg.qr(torch.cat(parts, dim=1))  # (m, ≤ r), orthonormal
            gu = None
        else:
            u = own
    fu = k_f @ u                                                # (n, r)
    ugu = u.T @ (gram @ u if gu is None else gu)
    a = (ugu + ugu.T) / 2 + fu.T @ fu
    a.diagonal().add_(ridge_eps(gram, k_f, eps_scale))
    return t.T.contiguous(), spd_solve(a, fu.T).T @ u.T  # ΔW = Tᵀ (F A⁻¹) Uᵀ: (d, n), (n, m)
