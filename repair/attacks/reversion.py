"""Reversion check for patch-based methods (STAMP): revert the patch, evaluate, compare with the pre-edit metrics.

A reversible edit must give back exactly the patient it started from: after `revert` every metric must equal the
'before' evaluation (same greedy generations, same perplexity), and re-applying must give the patched weights bit
for bit. It also shows what a patch is: the knowledge was never removed from the base weights, only masked by a
delta that anyone holding the weights can take off. Edits without a patch (`AttackContext.patch` is None: trained
into the weights) are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from repair.attacks import AttackContext, register_attack
from repair.evaluate import evaluate


@dataclass
class ReversionSettings:
    """`eval.attacks.reversion`: nothing to set beyond the shared seed."""

    seed: int


@register_attack("reversion")
class ReversionCheck:
    name = "reversion"
    Settings = ReversionSettings

    def __init__(self, settings: ReversionSettings):
        self.settings = settings

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        patch = ctx.patch
        method_name = getattr(ctx.method, "name", type(ctx.method).__name__)
        if patch is None:
            return {"skipped": f"method {method_name!r} keeps no reversible patch (only patch-based edits do)"}
        if not patch.applied:
            return {"skipped": f"method {method_name!r} holds a patch that is not applied"}
        covered = set(patch.provenance.get("forget") or [])
        if covered and not {q.question for q in ctx.task.forget} <= covered:
            return {"skipped": "the patch covers only the last of several unlearning requests (sequential.steps > 1); "
                               "reverting it alone cannot give back the pre-edit patient"}
        if ctx.before is None:
            raise ValueError("the reversion check needs the pre-edit ('before') metrics; pass before=... to run_attacks")
        model = ctx.patient.model
        params = dict(model.named_parameters())
        patched = {d.parameter: params[d.parameter].detach().clone() for d in patch.deltas}
        patch.revert(model)
        try:
            reverted, _ = evaluate(ctx.patient, ctx.task, ctx.eval_cfg)
        finally:
            patch.apply(model)  # no norm guard: the same delta was accepted when it was first applied
        reapplied_exact = all(torch.equal(params[name], value) for name, value in patched.items())
        shared = sorted(set(ctx.before) & set(reverted))
        diffs = {k: abs(float(reverted[k]) - float(ctx.before[k])) for k in shared}
        out = {"exact": all(reverted[k] == ctx.before[k] for k in shared), "max_abs_diff": max(diffs.values(), default=0.0),
               "differing": sorted(k for k in shared if reverted[k] != ctx.before[k]),
               "reverted": reverted, "reapplied_exact": reapplied_exact, "parameters": len(patched)}
        out["summary"] = {"exact": out["exact"], "reapplied_exact": reapplied_exact}
        return out
