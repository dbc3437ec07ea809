"""Relearning: fine-tune the unlearned patient for a few steps on part of the forget set, then measure how much of
the *other* part comes back (Hu et al., 2024; Lynch et al., 2024: unlearning that only suppresses knowledge
is undone by a little fine-tuning on related data).

The forget set is split by subject (`fraction` of the subjects to train on, the rest to test); with a single
subject it is split by item and the split is recorded. `source: retain_buffer` trains on the retain buffer
instead, a control for "does any fine-tuning bring it back". The forget score of the test part is measured
after each of `steps` optimiser steps (0 = the unlearned patient), with `fact_nll` (the facts' own tokens) as a
graded view of the same recovery and `holdout_fact_nll`, the same for facts the patient was never taught: it
separates recovered knowledge from a damaged patient merely being repaired (both would lower `fact_nll`). The patient is snapshot first and restored
after, so nothing learnt here reaches a later measurement.
"""
from __future__ import annotations

import logging
import random
from typing import Any

import torch

from repair.attacks import AttackContext, register_attack
from repair.attacks.common import check, fact_nll, limited, primary_metric, settings, summarize
from repair.data import answer_nll, collate, encode
from repair.evaluate import generate, score_answer
from repair.progress import progress
from repair.tasks import QA

log = logging.getLogger(__name__)

SOURCES = ("forget", "retain_buffer")
DEFAULTS = {"steps": [0, 5, 10, 25], "fraction": 0.5, "source": "forget", "lr": 5.0e-5, "batch_size": 4,
            "train_layers": "all", "max_length": 128}


def split_forget(forget: list[QA], fraction: float) -> tuple[list[QA], list[QA], str] | None:
    """(train part, test part, 'subject' or 'item'): disjoint subjects where there are two or more."""
    subjects = list(dict.fromkeys(q.subject for q in forget))
    if len(subjects) >= 2:
        chosen = set(subjects[: min(len(subjects) - 1, max(1, round(len(subjects) * fraction)))])
        return [q for q in forget if q.subject in chosen], [q for q in forget if q.subject not in chosen], "subject"
    if len(forget) >= 2:
        n = min(len(forget) - 1, max(1, round(len(forget) * fraction)))
        return forget[:n], forget[n:], "item"
    return None


@register_attack("relearn")
class Relearning:
    name = "relearn"

    def __init__(self, cfg: dict):
        self.cfg = settings(self.name, cfg, DEFAULTS)
        steps = self.cfg["steps"]
        check(isinstance(steps, list) and steps and all(isinstance(s, int) and s >= 0 for s in steps), self.name,
              "steps", steps, "a non-empty list of step counts >= 0, e.g. [0, 5, 10, 25]")
        self.steps = sorted(set(steps))
        fraction = self.cfg["fraction"]
        check(isinstance(fraction, (int, float)) and 0 < fraction < 1, self.name, "fraction", fraction,
              "a share of the forget subjects in (0, 1)")
        check(self.cfg["source"] in SOURCES, self.name, "source", self.cfg["source"], ", ".join(SOURCES))
        check(isinstance(self.cfg["lr"], (int, float)) and self.cfg["lr"] > 0, self.name, "lr", self.cfg["lr"], "a number > 0")
        for key in ("batch_size", "max_length"):
            check(isinstance(self.cfg[key], int) and self.cfg[key] >= 1, self.name, key, self.cfg[key], "an int >= 1")

    def _score(self, ctx: AttackContext, items: list[QA]) -> list[dict]:
        answers = generate(ctx.patient, [q.question for q in items], int(ctx.eval_cfg.get("max_new_tokens", 48)),
                           int(ctx.eval_cfg.get("batch_size", 16)), desc="relearn eval")
        return [score_answer(q, q.question, a, "relearn") for q, a in zip(items, answers)]

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        parts = split_forget(list(ctx.task.forget), float(self.cfg["fraction"]))
        if parts is None:
            return {"skipped": "the forget set has a single item: nothing to relearn from and test on"}
        train, test, how = parts
        if self.cfg["source"] == "retain_buffer":
            train = list(ctx.task.retain_buffer)
            if not train:
                return {"skipped": "source=retain_buffer but the task's retain buffer is empty"}
        test = limited(test, ctx.eval_cfg)
        control = limited(ctx.task.holdout, ctx.eval_cfg)
        metric = primary_metric(ctx.task)
        patient, model = ctx.patient, ctx.patient.model
        layers = patient.layer_indices(self.cfg["train_layers"], "eval.attacks.relearn.train_layers")
        prefixes = tuple(patient.layer_prefix(i) for i in layers)
        params = [p for n, p in model.named_parameters() if n.startswith(prefixes)]
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        state = patient.snapshot()
        examples = encode(patient.tokenizer, train, int(self.cfg["max_length"]))
        rng = random.Random(int(self.cfg["seed"]))
        bs = int(self.cfg["batch_size"])
        curve, losses, order = [], [], []
        bar = progress(total=self.steps[-1], desc="relearn")
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.AdamW(params, lr=float(self.cfg["lr"]), weight_decay=0.0)
            for target in self.steps:
                model.train()
                while len(losses) < target:
                    if len(order) < bs:  # reshuffle once an epoch's examples are used up
                        order += rng.sample(range(len(examples)), len(examples))
                    batch = collate([examples[i] for i in order[:bs]], patient.tokenizer.pad_token_id, patient.device)
                    del order[:bs]
                    loss = answer_nll(model, batch).mean()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    losses.append(loss.item())
                    bar.update(1)
                model.eval()
                point = {"step": target, **summarize(self._score(ctx, test)), "fact_nll": fact_nll(patient, test)}
                if control:
                    point["holdout_fact_nll"] = fact_nll(patient, control)
                if losses:
                    point["train_loss"] = losses[-1]
                curve.append(point)
        finally:
            bar.close()
            model.eval()
            patient.restore(state)
            for n, p in model.named_parameters():
                p.requires_grad_(flags[n])
        before_rows = [r for r in ctx.before_records if r.get("split") == "forget"
                       and r.get("question") in {q.question for q in test}]
        before = summarize(before_rows).get(metric) if before_rows else None
        first, last = curve[0].get(metric), curve[-1].get(metric)
        out = {"split": how, "source": self.cfg["source"], "n_train": len(train), "n_test": len(test),
               "metric": metric, "curve": curve, "before_unlearning": before, "recovered": last - first,
               # share of what unlearning removed from the test part that came back
               "recovered_share": ((last - first) / (before - first)) if before is not None and before > first else None}
        out["summary"] = {p["step"]: round(p.get(metric, float("nan")), 3) for p in curve}
        return out
