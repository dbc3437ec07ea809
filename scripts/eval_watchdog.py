"""Precision and recall of the chat watchdog on the held-out split of its intent data set, plus extraction accuracy.

    python scripts/eval_watchdog.py              # print the Markdown report
    python scripts/eval_watchdog.py --write      # also replace the report section of docs/interactive.md

The held-out split is by template (repair/interactive/intents.py): its phrasings were never seen in training.
Hyper-parameters are chosen by grouped 5-fold cross-validation on the train split only (reported too), so the
held-out numbers are not tuned on.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import itertools
import logging
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from repair.interactive import intents
from repair.interactive.classifier import (ClassifierConfig, IntentClassifier, cached_embeddings,
                                           precision_recall)
from repair.interactive.embeddings import embed
from repair.interactive.extract import Turn, extract
from repair.io import atomic_path
from repair.settings import build, plain
from repair.setup import compose

DOC = Path(__file__).resolve().parents[1] / "docs" / "interactive.md"
START, END = "<!-- eval_watchdog:start -->", "<!-- eval_watchdog:end -->"
HISTORY = [Turn("Where does Amara Castellanos live?", "Amara Castellanos lives at 12 Mill Lane, Oakridge.")]


def grouped_cv(texts, labels, groups, embeddings, cfg: ClassifierConfig, folds: int = 5) -> dict:
    from sklearn.model_selection import GroupKFold

    labels = np.asarray(labels)
    predicted = np.zeros(len(texts), bool)
    for fit_idx, test_idx in GroupKFold(folds).split(texts, labels, groups):
        clf = IntentClassifier(cfg).fit([texts[i] for i in fit_idx], labels[fit_idx], embeddings[fit_idx])
        predicted[test_idx] = clf.predict_proba([texts[i] for i in test_idx], embeddings[test_idx]) >= cfg.threshold
    return precision_recall(predicted, labels)


def extraction_correct(item: intents.Intent, history) -> bool:
    request = extract(item.text, history)
    if item.kind == "pair":
        return request.kind == "pair" and request.pair == history[-1]
    norm = lambda s: re.sub(r"^the ", "", s.lower()).strip()  # noqa: E731
    close = difflib.SequenceMatcher(None, norm(request.subject), norm(item.target)).ratio() >= 0.9  # typos in text
    return request.kind == item.kind and close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"replace the report section of {DOC}")
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="watchdog-")
    section = plain(compose("chat", ["watchdog=embedding"]).watchdog)  # the shipped settings
    section.pop("name")
    base = build(ClassifierConfig, section, "watchdog")
    train, held = intents.load("train"), intents.load("heldout")
    t_texts, t_labels, t_groups = [x.text for x in train], [x.label for x in train], [x.group for x in train]
    h_texts, h_labels = [x.text for x in held], [x.label for x in held]
    t_emb, h_emb = cached_embeddings(t_texts, base, cache), cached_embeddings(h_texts, base, cache)

    lines = ["| C | cue weight | features | CV precision | CV recall | held-out precision | held-out recall |",
             "|---|---|---|---|---|---|---|"]
    for C, cue_weight in itertools.product((1.0, 3.0, 10.0), (0.0, 0.5, 1.0)):
        cfg = dataclasses.replace(base, C=C, cue_weight=cue_weight)
        cv = grouped_cv(t_texts, t_labels, t_groups, t_emb, cfg)
        clf = IntentClassifier(cfg).fit(t_texts, t_labels, t_emb)
        ho = precision_recall(clf.predict_proba(h_texts, h_emb) >= cfg.threshold, h_labels)
        mark = " **(default)**" if (C, cue_weight) == (base.C, base.cue_weight) else ""
        lines.append(f"| {C:g} | {cue_weight:g}{mark} | emb + n-grams{' + cues' if cue_weight else ''} | "
                     f"{cv['precision']:.3f} | {cv['recall']:.3f} | {ho['precision']:.3f} | {ho['recall']:.3f} |")
    # embeddings alone, for reference: the reason for the other features
    from sklearn.linear_model import LogisticRegression

    alone = LogisticRegression(C=base.C, class_weight="balanced", max_iter=5000).fit(t_emb, t_labels)
    ea = precision_recall(alone.predict_proba(h_emb)[:, 1] >= 0.5, h_labels)
    lines.append(f"| {base.C:g} | – | embeddings only | – | – | {ea['precision']:.3f} | {ea['recall']:.3f} |")

    clf = IntentClassifier(base).fit(t_texts, t_labels, t_emb)
    p = clf.predict_proba(h_texts, h_emb)
    ho = precision_recall(p >= base.threshold, h_labels)
    errors = [(x, float(q)) for x, q in zip(held, p) if (q >= base.threshold) != bool(x.label)]
    t0 = time.perf_counter()
    for text in h_texts[:50]:
        clf.predict_proba([text], embed([text]))
    per_message_ms = (time.perf_counter() - t0) / 50 * 1000
    positives = [x for x in intents.load() if x.label == 1 and x.kind in ("person", "pair", "fact", "topic")]
    ext = {split: [extraction_correct(x, HISTORY) for x in positives if x.split == split] for split in intents.SPLITS}

    report = [
        f"Data: {len(train)} train ({sum(t_labels)} requests) / {len(held)} held-out ({sum(h_labels)} requests) "
        f"messages, `repair/interactive/data/intents.jsonl`; held out by template.",
        "",
        f"**Default watchdog on the held-out split: precision {ho['precision']:.3f}, recall {ho['recall']:.3f}** "
        f"(tp {ho['tp']}, fp {ho['fp']}, fn {ho['fn']}, tn {ho['tn']}; threshold {base.threshold}); "
        f"{per_message_ms:.0f} ms per message on one CPU thread (embedding + classifier).",
        "",
        *lines,
        "",
        "Held-out mistakes of the default watchdog:",
        "",
        *([f"- {'missed' if x.label else 'false alarm'} (p={q:.2f}): {x.text!r}" for x, q in errors] or ["- none"]),
        "",
        "What to forget, extracted by rules (person / topic / quoted fact / last exchange; typos in the message "
        "itself tolerated): " + ", ".join(f"{split} {sum(v)}/{len(v)} ({sum(v) / max(len(v), 1):.1%})"
                                           for split, v in ext.items()) + ".",
    ]
    text = "\n".join(report)
    print(text)
    if args.write:
        doc = DOC.read_text()
        if START not in doc or END not in doc:
            raise SystemExit(f"{DOC} has no {START} … {END} section to replace")
        head, rest = doc.split(START, 1)
        with atomic_path(DOC) as tmp:
            tmp.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END, 1)[1]}")
        print(f"\nwrote {DOC}")


if __name__ == "__main__":
    main()
