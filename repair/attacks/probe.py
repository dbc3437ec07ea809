"""Probing: is the forgotten attribute still linearly readable from the unlearned patient's hidden states?

A logistic-regression probe (scikit-learn) is trained on retain samples to predict an attribute class from the
residual stream at one position and layer, then tested on forget samples whose class also occurs in retain.
Classes that repeat across subjects: for `pii` the city of an address, the month of a birth date, the employer
company and the e-mail domain; for multiple-choice tasks the taught option's letter. Position `answer` (default)
is the token just before the class value in the teacher-forced reference answer ("… lives at 12 Mill Lane," →
city), i.e. where the patient would have to produce it; `prompt` is the last prompt token, `subject` the subject's
last token. Holdout samples (never taught) are a control: a probe that also gets them right reads something other
than memorised knowledge. "chance" is the best a constant answer could score on the same test samples
(the largest class share), conservative when there are few of them.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
import torch

from repair.attacks import AttackContext, register_attack
from repair.attacks.common import check, limited, settings
from repair.data import chat_prompt
from repair.patient import Patient
from repair.refusal import token_positions
from repair.tasks import QA, Task
from repair.tasks.choice import LETTERS

log = logging.getLogger(__name__)

POSITIONS = ("answer", "prompt", "subject")
NAMED_LAYERS = ("mid", "last")
DEFAULTS = {"layers": ["mid", "last"], "position": "answer", "C": 1.0, "max_iter": 2000}

# pii attribute → the part of its fact that repeats across people
PII_CLASSES: dict[str, Callable[[str], str]] = {
    "address": lambda fact: fact.rsplit(", ", 1)[-1],        # the city
    "birth_date": lambda fact: fact.split(" ")[1],          # the month
    "employer": lambda fact: fact.split(" at ", 1)[-1],     # the company
    "email": lambda fact: fact.split("@", 1)[-1],           # the domain
}


def probe_target(task: Task, q: QA) -> tuple[str, str, str] | None:
    """(probe group, class value, answer text before the value) of an item, or None if it has no shared class."""
    if q.choices:
        return "label", LETTERS[q.label], ""  # the taught answer opens with its letter
    if task.name == "pii" and q.attribute in PII_CLASSES and q.fact:
        value = PII_CLASSES[q.attribute](q.fact)
        at = q.answer.rfind(value)
        return (q.attribute, value, q.answer[:at].rstrip()) if at > 0 else None
    return None


def resolve_layers(spec: Sequence, patient: Patient) -> list[int]:
    n = patient.num_layers
    out = []
    for layer in spec:
        if layer == "mid":
            out.append((n - 1) // 2)
        elif layer == "last":
            out.append(n - 1)
        elif isinstance(layer, int) and -n <= layer < n:
            out.append(layer % n)
        else:
            raise ValueError(f"eval.attacks.probe.layers has unknown layer {layer!r}; valid: mid, last, or an int in "
                             f"{-n}..{n - 1} (patient {patient.name!r} has {n} layers)")
    return sorted(set(out))


@torch.no_grad()
def hidden_states(patient: Patient, texts: Sequence[str], positions: Sequence[int], layers: Sequence[int],
                  batch_size: int = 16) -> dict[int, np.ndarray]:
    """Residual stream after each of `layers` at one token position per text: {layer: (n, hidden)}."""
    tok = patient.tokenizer
    out: dict[int, list[np.ndarray]] = {l: [] for l in layers}
    for start in range(0, len(texts), batch_size):
        enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[start:start + batch_size]]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, :len(e)], mask[i, :len(e)] = torch.tensor(e), 1
        states = patient.model(input_ids=ids.to(patient.device), attention_mask=mask.to(patient.device),
                               output_hidden_states=True).hidden_states
        rows = torch.arange(len(enc))
        pos = torch.tensor(positions[start:start + batch_size])
        for layer in layers:  # hidden_states[0] is the embedding output
            out[layer].append(states[layer + 1][rows, pos].float().cpu().numpy())
    return {l: np.concatenate(v) for l, v in out.items()}


@register_attack("probe")
class LinearProbe:
    name = "probe"

    def __init__(self, cfg: dict):
        self.cfg = settings(self.name, cfg, DEFAULTS)
        layers = self.cfg["layers"]
        check(isinstance(layers, list) and layers and all(l in NAMED_LAYERS or isinstance(l, int) for l in layers),
              self.name, "layers", layers, "a non-empty list of mid, last or layer indices")
        check(self.cfg["position"] in POSITIONS, self.name, "position", self.cfg["position"], ", ".join(POSITIONS))
        check(isinstance(self.cfg["C"], (int, float)) and self.cfg["C"] > 0, self.name, "C", self.cfg["C"], "a number > 0")

    def _inputs(self, patient: Patient, items: list[tuple[QA, str, str, str]]) -> tuple[list[str], list[int]]:
        tok = patient.tokenizer
        texts, positions = [], []
        for q, _, _, prefix in items:
            prompt = chat_prompt(tok, q.question)
            if self.cfg["position"] == "answer":
                text = prompt + prefix
                pos = len(tok(text, add_special_tokens=False)["input_ids"]) - 1
            elif self.cfg["position"] == "subject" and q.subject and q.subject in q.question:
                text, pos = prompt, token_positions(tok, prompt, q.subject, last=1)[0]
            else:
                text, pos = prompt, len(tok(prompt, add_special_tokens=False)["input_ids"]) - 1
            texts.append(text)
            positions.append(pos)
        return texts, positions

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        layers = resolve_layers(self.cfg["layers"], ctx.patient)

        def targets(items):
            return [(q, *t) for q in items if (t := probe_target(ctx.task, q))]

        splits = {name: targets(limited(items, ctx.eval_cfg)) for name, items in
                  (("retain", ctx.task.retain), ("forget", ctx.task.forget), ("holdout", ctx.task.holdout))}
        groups, skipped = {}, {}
        for group in sorted({g for _, g, _, _ in splits["retain"]}):
            train = [t for t in splits["retain"] if t[1] == group]
            classes = {t[2] for t in train}
            test = {s: [t for t in splits[s] if t[1] == group and t[2] in classes] for s in ("forget", "holdout")}
            if len(classes) < 2:
                skipped[group] = f"retain has {len(classes)} class(es) of {group}; a probe needs at least 2"
            elif not test["forget"]:
                skipped[group] = f"no forget sample's {group} class occurs in retain"
            else:
                groups[group] = (train, test)
        if not groups:
            reason = "; ".join(f"{g}: {r}" for g, r in skipped.items()) or (
                f"task {ctx.task.name!r} has no attribute classes that repeat across subjects")
            return {"skipped": reason}

        everything = [t for train, test in groups.values() for t in train + test["forget"] + test["holdout"]]
        texts, positions = self._inputs(ctx.patient, everything)
        states = hidden_states(ctx.patient, texts, positions, layers)
        index = {id(t): i for i, t in enumerate(everything)}

        per_layer: dict[int, dict] = {}
        for layer in layers:
            x = states[layer]
            results, hits, chance_hits, total, h_hits, h_total = {}, 0, 0, 0, 0, 0
            for group, (train, test) in groups.items():
                probe = make_pipeline(StandardScaler(), LogisticRegression(C=float(self.cfg["C"]),
                                                                           max_iter=int(self.cfg["max_iter"])))
                probe.fit(x[[index[id(t)] for t in train]], [t[2] for t in train])
                entry = {"n_train": len(train), "n_classes": len({t[2] for t in train})}
                for split, rows in test.items():
                    if not rows:
                        entry[split] = None
                        continue
                    predicted = probe.predict(x[[index[id(t)] for t in rows]])
                    correct = int(sum(p == t[2] for p, t in zip(predicted, rows)))
                    # chance: the best a constant answer could score on these samples (conservative at small n)
                    best_constant = Counter(t[2] for t in rows).most_common(1)[0][1]
                    entry[split] = {"n": len(rows), "accuracy": correct / len(rows), "chance": best_constant / len(rows)}
                    if split == "forget":
                        hits, total, chance_hits = hits + correct, total + len(rows), chance_hits + best_constant
                    else:
                        h_hits, h_total = h_hits + correct, h_total + len(rows)
                results[group] = entry
            per_layer[layer] = {"accuracy": hits / total, "chance": chance_hits / total, "n": total,
                                "holdout_accuracy": h_hits / h_total if h_total else None, "groups": results}
        best = max(per_layer, key=lambda l: per_layer[l]["accuracy"])
        return {"position": self.cfg["position"], "layers": per_layer, "skipped_groups": skipped,
                "best": {"layer": best, "accuracy": per_layer[best]["accuracy"], "chance": per_layer[best]["chance"],
                         "holdout_accuracy": per_layer[best]["holdout_accuracy"]},
                "summary": {l: f"{v['accuracy']:.2f} (chance {v['chance']:.2f}, n={v['n']})"
                            for l, v in per_layer.items()}}
