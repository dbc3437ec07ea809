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

import dataclasses
import logging
import random
from typing import Any, Iterator, Literal

from repair.attacks import AttackContext, register_attack
from repair.attacks.common import fact_nll, limited, primary_metric, summarize
from repair.data import answer_nll, collate, encode
from repair.evaluate import score_answer
from repair.generation import generate
from repair.settings import require
from repair.tasks import QA
from repair.training import Optimiser, TrainLayers, evaluating, select_parameters, train_steps

log = logging.getLogger(__name__)

CLIP_NORM = 1.0  # relearning's recipe, with no weight decay and a constant learning rate


@dataclasses.dataclass
class RelearnSettings:
    """The `eval.attacks.relearn` section (conf/eval/attacks/all.yaml, documented there) and the attacks' `seed`."""

    steps: list[int]
    fraction: float
    source: Literal["forget", "retain_buffer"]
    lr: float
    batch_size: int
    train_layers: TrainLayers
    max_length: int
    seed: int

    def check(self) -> None:
        where = "eval.attacks.relearn"
        require(bool(self.steps) and all(s >= 0 for s in self.steps), f"{where}.steps", self.steps,
                "a non-empty list of step counts >= 0, e.g. [0, 5, 10, 25]")
        require(0 < self.fraction < 1, f"{where}.fraction", self.fraction, "a share of the forget subjects in (0, 1)")
        require(self.lr > 0, f"{where}.lr", self.lr, "a number > 0")
        for key in ("batch_size", "max_length"):
            require(getattr(self, key) >= 1, f"{where}.{key}", getattr(self, key), "an integer >= 1")


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


def carried_batches(examples: list[dict], batch_size: int, rng: random.Random) -> Iterator[list[dict]]:
    """Endless batches of exactly `batch_size`: a new shuffled pass is appended once fewer examples than a batch are
    left, so a batch may span two passes."""
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        yield [examples[i] for i in order[:batch_size]]
        del order[:batch_size]


@register_attack("relearn")
class Relearning:
    name = "relearn"
    Settings = RelearnSettings

    def __init__(self, settings: RelearnSettings):
        self.settings = settings
        self.steps = sorted(set(settings.steps))

    def _score(self, ctx: AttackContext, items: list[QA]) -> list[dict]:
        answers = generate(ctx.patient, [q.question for q in items], int(ctx.eval_cfg["max_new_tokens"]),
                           int(ctx.eval_cfg["batch_size"]), desc="relearn eval")
        return [score_answer(q, q.question, a, "relearn") for q, a in zip(items, answers)]

    def _measure(self, ctx: AttackContext, test: list[QA], control: list[QA], step: int,
                 logs: dict[str, Any] | None) -> dict[str, Any]:
        """The test part's forget score and fact NLL (and the never-taught control's) after `step` steps."""
        point = {"step": step, **summarize(self._score(ctx, test)), "fact_nll": fact_nll(ctx.patient, test)}
        if control:
            point["holdout_fact_nll"] = fact_nll(ctx.patient, control)
        if logs is not None:
            point["train_loss"] = logs["loss"]
        return point

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        s = self.settings
        parts = split_forget(list(ctx.task.forget), s.fraction)
        if parts is None:
            return {"skipped": "the forget set has a single item: nothing to relearn from and test on"}
        train, test, how = parts
        if s.source == "retain_buffer":
            train = list(ctx.task.retain_buffer)
            if not train:
                return {"skipped": "source=retain_buffer but the task's retain buffer is empty"}
        test = limited(test, ctx.eval_cfg)
        control = limited(ctx.task.holdout, ctx.eval_cfg)
        metric = primary_metric(ctx.task)
        patient, model = ctx.patient, ctx.patient.model
        params = select_parameters(patient, s.train_layers, "all", "eval.attacks.relearn")
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        state = patient.snapshot()
        examples = encode(patient.tokenizer, train, s.max_length)
        batches = carried_batches(examples, s.batch_size, random.Random(s.seed))
        optimiser = Optimiser(s.lr, weight_decay=0.0, max_grad_norm=CLIP_NORM, grad_accum=1,
                              schedule=lambda step: 1.0, lr_setting="eval.attacks.relearn.lr")

        def micro_step():
            batch = collate(next(batches), patient.tokenizer.pad_token_id, patient.device)
            yield answer_nll(model, batch).mean(), 1.0, {}

        def measure(done: int, logs: dict[str, Any]) -> bool:
            if done in self.steps:
                with evaluating(model):
                    curve.append(self._measure(ctx, test, control, done, logs))
            return False

        curve: list[dict[str, Any]] = []
        try:
            if self.steps[0] == 0:  # the unlearned patient
                model.eval()
                curve.append(self._measure(ctx, test, control, 0, None))
            train_steps(model, params, self.steps[-1], micro_step, optimiser, "relearn", measure)
        finally:
            patient.restore(state)
            for n, p in model.named_parameters():
                p.requires_grad_(flags[n])
        before_rows = [r for r in ctx.before_records if r.get("split") == "forget"
                       and r.get("question") in {q.question for q in test}]
        before = summarize(before_rows).get(metric) if before_rows else None
        first, last = curve[0].get(metric), curve[-1].get(metric)
        out = {"split": how, "source": s.source, "n_train": len(train), "n_test": len(test),
               "metric": metric, "curve": curve, "before_unlearning": before, "recovered": last - first,
               # share of what unlearning removed from the test part that came back
               "recovered_share": ((last - first) / (before - first)) if before is not None and before > first else None}
        out["summary"] = {p["step"]: round(p.get(metric, float("nan")), 3) for p in curve}
        return out
