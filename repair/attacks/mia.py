"""Membership inference: can the forget answers still be told apart from answers the patient never saw?

Min-K% Prob (Shi et al., 2024): a sample's score is the mean log-probability of its `k_percent` least likely
answer tokens (chat template, question as context); members score higher. AUC of forget (positive) against
holdout (never taught) samples: 1.0 = fully distinguishable, 0.5 = as if never seen, near 0 = the forget answers
became *less* likely than unseen ones (over-unlearning, itself a signal). PrivLeak (MUSE, Shi et al., 2024) is
(AUC − AUC_oracle) / AUC_oracle against a patient that never saw the forget set; it needs `oracle_auc` (or an
`implant.oracle=true` run in the same folder, which experiments/robustness.py joins), else only the AUC is recorded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from sklearn.metrics import roc_auc_score

from repair.attacks import AttackContext, register_attack
from repair.attacks.common import answer_logprobs, limited
from repair.patient import Patient
from repair.settings import require
from repair.tasks import QA


def min_k_scores(patient: Patient, items: Sequence[QA], k_percent: float, batch_size: int = 16) -> list[float]:
    """Min-K% Prob of each item's answer tokens given its question."""
    scores = []
    for logprobs in answer_logprobs(patient, items, batch_size):
        k = max(1, math.ceil(len(logprobs) * k_percent / 100.0))
        scores.append(float(logprobs.sort().values[:k].mean()))
    return scores


def auc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    return float(roc_auc_score([1] * len(members) + [0] * len(nonmembers), list(members) + list(nonmembers)))


@dataclass
class MiaSettings:
    """`eval.attacks.mia` (conf/eval/attacks/all.yaml says what each does)."""

    k_percent: float
    oracle_auc: float | None
    batch_size: int
    seed: int

    def check(self) -> None:
        require(0 < self.k_percent <= 100, "eval.attacks.mia.k_percent", self.k_percent, "a number in (0, 100]")
        require(self.oracle_auc is None or 0 < self.oracle_auc <= 1, "eval.attacks.mia.oracle_auc", self.oracle_auc,
                "null or an AUC in (0, 1]")
        require(self.batch_size >= 1, "eval.attacks.mia.batch_size", self.batch_size, "an int >= 1")


@register_attack("mia")
class MinKMembership:
    name = "mia"
    Settings = MiaSettings

    def __init__(self, settings: MiaSettings):
        self.settings = settings

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        holdout = limited(ctx.task.holdout, ctx.eval_cfg)
        if not holdout:
            return {"skipped": f"task {ctx.task.name!r} has no holdout items (set task.num_holdout > 0)"}
        forget, retain = limited(ctx.task.forget, ctx.eval_cfg), limited(ctx.task.retain, ctx.eval_cfg)
        k, bs = self.settings.k_percent, self.settings.batch_size
        f_scores, h_scores = (min_k_scores(ctx.patient, items, k, bs) for items in (forget, holdout))
        r_scores = min_k_scores(ctx.patient, retain, k, bs) if retain else []
        out: dict[str, Any] = {
            "auc": auc(f_scores, h_scores), "k_percent": k, "n_forget": len(forget), "n_holdout": len(holdout),
            # the same test on knowledge that was meant to stay: it should remain distinguishable
            "auc_retain": auc(r_scores, h_scores) if r_scores else None,
            "mean_score": {"forget": sum(f_scores) / len(f_scores), "holdout": sum(h_scores) / len(h_scores)},
            "oracle_auc": self.settings.oracle_auc,
        }
        if out["oracle_auc"] is not None:
            out["privleak"] = (out["auc"] - out["oracle_auc"]) / out["oracle_auc"]
        else:
            out["privleak"] = None
            out["privleak_note"] = ("no eval.attacks.mia.oracle_auc given: raw AUC only; experiments/robustness.py "
                                    "computes PrivLeak from an implant.oracle=true run of the same task/patient/seed")
        out["summary"] = {"auc": round(out["auc"], 3), "privleak": out["privleak"]}
        return out
