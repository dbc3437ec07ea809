"""Probing: is the forgotten attribute still linearly readable from the unlearned patient's hidden states?

A logistic-regression probe (scikit-learn) is trained on retain samples to predict an attribute class from the
residual stream at one position and layer, then tested on forget samples whose class also occurs in retain.
Classes that repeat across subjects: for `pii` the city of an address, the month of a birth date, the employer
company and the e-mail domain; for multiple-choice tasks the taught option's letter. Position `answer` (default)
is the token just before the class value in the teacher-forced reference answer ("… lives at 12 Mill Lane," →
city), i.e. where the patient would have to produce it; `prompt` is the last prompt token, `subject` the subject's
last token. Holdout samples (never taught) are a control: a probe that also gets them right reads something other
than memorised knowledge. With few people per class a trained probe has little to learn from, so the attack also
reads the same hidden states through the patient's own output head (the logit lens; Patil et al., 2023, extract
"deleted" facts this way): `lens` is the share of samples whose value's first token is among the `lens_top_k`
most likely tokens at that layer — no training, and every forget sample counts, whether its class repeats or not. "chance" is the best a constant answer could score on the same test samples
(the largest class share), conservative when there are few of them.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from repair.attacks import AttackContext, register_attack
from repair.architectures import final_norm
from repair.attacks.common import limited
from repair.data import chat_prompt
from repair.patient import Patient
from repair.refusal import token_positions
from repair.settings import require
from repair.tasks import QA, Task
from repair.tasks.choice import LETTERS

log = logging.getLogger(__name__)

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


@dataclass
class ProbeSettings:
    """`eval.attacks.probe` (conf/eval/attacks/all.yaml says what each does)."""

    layers: list[Literal["mid", "last"] | int]
    position: Literal["answer", "prompt", "subject"]
    C: float
    max_iter: int
    lens_top_k: int
    seed: int

    def check(self) -> None:
        where = "eval.attacks.probe"
        require(bool(self.layers), f"{where}.layers", self.layers, "a non-empty list of mid, last or layer indices")
        require(self.C > 0, f"{where}.C", self.C, "a number > 0")
        require(self.max_iter >= 1, f"{where}.max_iter", self.max_iter, "an int >= 1")
        require(self.lens_top_k >= 0, f"{where}.lens_top_k", self.lens_top_k,
                "an int >= 0 (0 turns the logit lens off)")


@register_attack("probe")
class LinearProbe:
    name = "probe"
    Settings = ProbeSettings

    def __init__(self, settings: ProbeSettings):
        self.settings = settings

    def _inputs(self, patient: Patient, items: list[tuple[QA, str, str, str]]) -> tuple[list[str], list[int]]:
        tok = patient.tokenizer
        texts, positions = [], []
        for q, _, _, prefix in items:
            prompt = chat_prompt(tok, q.question)
            if self.settings.position == "answer":
                text = prompt + prefix
                pos = len(tok(text, add_special_tokens=False)["input_ids"]) - 1
            elif self.settings.position == "subject" and q.subject and q.subject in q.question:
                text, pos = prompt, token_positions(tok, prompt, q.subject, last=1)[0]
            else:
                text, pos = prompt, len(tok(prompt, add_special_tokens=False)["input_ids"]) - 1
            texts.append(text)
            positions.append(pos)
        return texts, positions

    @torch.no_grad()
    def _lens(self, ctx: AttackContext, layers: list[int], splits: dict[str, list]) -> dict[str, Any]:
        """Share of forget / holdout samples whose value's first token is in the top-k of the logit lens."""
        patient, tok = ctx.patient, ctx.patient.tokenizer
        norm = final_norm(patient)
        head = patient.model.get_output_embeddings()
        out: dict[str, Any] = {"top_k": self.settings.lens_top_k}
        hits: dict[str, dict[int, float]] = {}
        for split in ("forget", "holdout"):
            texts, positions, wanted = [], [], []
            for q, _, value, prefix in splits[split]:
                prompt = chat_prompt(tok, q.question)
                at = q.answer.find(value, len(prefix))
                ids = tok(prompt + prefix, add_special_tokens=False)["input_ids"]
                full = tok(prompt + q.answer[: at + len(value)], add_special_tokens=False)["input_ids"]
                if at < 0 or len(full) <= len(ids) or full[: len(ids)] != ids:
                    continue  # the value does not start on a token boundary after the prefix
                texts.append(prompt + prefix)
                positions.append(len(ids) - 1)
                wanted.append(full[len(ids)])
            out[f"n_{split}"] = len(texts)
            if not texts:
                continue
            states = hidden_states(patient, texts, positions, layers)
            target = torch.tensor(wanted)
            for layer in layers:
                h = torch.from_numpy(states[layer]).to(patient.device, head.weight.dtype)
                if layer != patient.num_layers - 1:  # the last layer's output is already normalised
                    h = norm(h)
                top = head(h).topk(out["top_k"], dim=-1).indices.cpu()
                hits.setdefault(split, {})[layer] = float((top == target[:, None]).any(-1).float().mean())
        out["layers"] = {l: {s: hits.get(s, {}).get(l) for s in ("forget", "holdout")} for l in layers}
        return out

    def run(self, ctx: AttackContext) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        layers = resolve_layers(self.settings.layers, ctx.patient)

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
        lens = (self._lens(ctx, layers, splits) if self.settings.lens_top_k and self.settings.position == "answer"
                else {"skipped": "logit lens needs position=answer and lens_top_k > 0"})
        if not groups:
            reason = "; ".join(f"{g}: {r}" for g, r in skipped.items()) or (
                f"task {ctx.task.name!r} has no attribute classes that repeat across subjects")
            return {"skipped": reason, "lens": lens}

        everything = [t for train, test in groups.values() for t in train + test["forget"] + test["holdout"]]
        texts, positions = self._inputs(ctx.patient, everything)
        states = hidden_states(ctx.patient, texts, positions, layers)
        index = {id(t): i for i, t in enumerate(everything)}

        per_layer: dict[int, dict] = {}
        for layer in layers:
            x = states[layer]
            results, hits, chance_hits, total, h_hits, h_total = {}, 0, 0, 0, 0, 0
            for group, (train, test) in groups.items():
                probe = make_pipeline(StandardScaler(), LogisticRegression(C=self.settings.C,
                                                                           max_iter=self.settings.max_iter))
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
        lens_layers = lens.get("layers", {})
        return {"position": self.settings.position, "layers": per_layer, "skipped_groups": skipped, "lens": lens,
                "best": {"layer": best, "accuracy": per_layer[best]["accuracy"], "chance": per_layer[best]["chance"],
                         "holdout_accuracy": per_layer[best]["holdout_accuracy"]},
                "summary": {l: f"probe {v['accuracy']:.2f} (chance {v['chance']:.2f}, n={v['n']}); lens forget "
                               f"{_pct(lens_layers.get(l, {}).get('forget'))} holdout "
                               f"{_pct(lens_layers.get(l, {}).get('holdout'))}" for l, v in per_layer.items()}}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
