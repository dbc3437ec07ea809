"""The offline watchdog's intent classifier: logistic regression over sentence embeddings, word n-grams and a few
polarity cues.

Why not embeddings alone: mean-pooled sentence embeddings barely see polarity — "Never forget John's birthday" sits
next to "Forget John's birthday" (measured on the held-out split: precision 0.82 with embeddings alone, 0.92 with
word n-grams added, 0.99 with the cues too; docs/interactive.md). The cues say what the embedding misses: a forget-verb under negation, a negated
"remember/know" (which *is* a request), an imperative, "from your memory", a question or a past tense.

The training set's embeddings are cached (a .npy keyed by data and model version, written atomically); fitting the
n-grams and the regression on top takes well under a second, so nothing pickled is ever loaded.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from repair.interactive import intents
from repair.interactive.embeddings import embed, model_version
from repair.io import atomic_path
from repair.settings import require

log = logging.getLogger(__name__)

VERB = r"(?:forget|forgett?|forgt|erase|erace|delete|delet|remove|wipe|unlearn|purge|scrub|expunge|lose|drop|clear)"
FORGET = r"(?:forget|forgett?|forgt|unlearn)(?![-\w])"
NEG = r"(?:don'?t|do not|dont|never|not|won'?t|will not|wouldn'?t|shouldn'?t|no need to)"
CUES = {
    "negated_forget": re.compile(rf"\b{NEG}\s+(?:\w+\s+){{0,2}}?{VERB}\b", re.I),
    "negated_remember": re.compile(rf"\b(?:{NEG}|no longer|not be able to)\s+(?:\w+\s+){{0,2}}?"
                                   r"(?:remember|know|recall|answer)\b", re.I),
    "memory_object": re.compile(r"\b(?:from|out of) (?:your|ur) (?:memory|knowledge|mind|model|weights)\b"
                                r"|\bright to be forgotten\b|\bgdpr\b|\berasure\b", re.I),
    "imperative_forget": re.compile(rf"^(?:\W*(?:please|pls|plz|kindly|hey|ok|okay|now|hi|just)\b)*\W*{FORGET}", re.I),
    "you_forget": re.compile(rf"\b(?:you|u)\s+(?:(?:to|should|must|could|can|would|please|just)\s+)*{VERB}", re.I),
    "past_or_habit": re.compile(r"\bforgot(?:ten)?\b|\b(?:always|often|keep|sometimes|usually)\s+forget", re.I),
    "question": re.compile(r"^\W*(?:did|have|has|do|does|is|are|was|why|what|how|when|who|which)\b", re.I),
    "remember_request": re.compile(r"^\W*(?:please\s+)?(?:remember|keep|store|remind|write)\b", re.I),
}


def cue_features(texts: Sequence[str]) -> np.ndarray:
    return np.array([[1.0 if cue.search(t) else 0.0 for cue in CUES.values()] for t in texts], dtype=np.float32)


@dataclass
class ClassifierConfig:
    """The classifier's settings: the `embedding` watchdog's (conf/watchdog/embedding.yaml holds their values)."""

    embedding: str
    C: float            # inverse regularisation of the logistic regression
    cue_weight: float   # scale of the cue features next to unit-norm embeddings and tf-idf rows
    ngrams: list[int]   # [smallest, largest] word n-gram length
    threshold: float    # P(forget request) at or above which a message is a request
    device: str

    def check(self) -> None:
        require(self.C > 0, "watchdog.C", self.C, "a number > 0")
        require(self.cue_weight >= 0, "watchdog.cue_weight", self.cue_weight, "a number >= 0")
        require(len(self.ngrams) == 2 and 1 <= self.ngrams[0] <= self.ngrams[1], "watchdog.ngrams", self.ngrams,
                "[smallest, largest] with 1 <= smallest <= largest")
        require(0 < self.threshold < 1, "watchdog.threshold", self.threshold, "a probability in (0, 1)")


class IntentClassifier:
    """P(message asks the model to forget something)."""

    def __init__(self, cfg: ClassifierConfig):
        self.cfg = cfg
        self.vectorizer = None
        self.model = None

    def _features(self, texts: Sequence[str], embeddings: np.ndarray):
        import scipy.sparse as sp

        return sp.hstack([sp.csr_matrix(embeddings), sp.csr_matrix(cue_features(texts) * self.cfg.cue_weight),
                          self.vectorizer.transform(texts)]).tocsr()

    def fit(self, texts: Sequence[str], labels: Sequence[int], embeddings: np.ndarray | None = None) -> "IntentClassifier":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        if embeddings is None:
            embeddings = embed(texts, self.cfg.embedding, self.cfg.device)
        self.vectorizer = TfidfVectorizer(ngram_range=tuple(self.cfg.ngrams), sublinear_tf=True).fit(texts)
        self.model = LogisticRegression(C=self.cfg.C, class_weight="balanced", max_iter=5000)
        self.model.fit(self._features(texts, embeddings), np.asarray(labels))
        return self

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("the intent classifier is not trained: call fit() first")
        if embeddings is None:
            embeddings = embed(texts, self.cfg.embedding, self.cfg.device)
        return self.model.predict_proba(self._features(texts, embeddings))[:, 1]

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_proba(texts) >= self.cfg.threshold


def cached_embeddings(texts: Sequence[str], cfg: ClassifierConfig, cache_dir: str | Path) -> np.ndarray:
    """Embeddings of a fixed text list, cached under `cache_dir/watchdog/` by content and model version."""
    key = hashlib.sha256("\n".join([model_version(cfg.embedding), *texts]).encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / "watchdog" / f"embeddings-{key}.npy"
    if path.exists():
        try:
            cached = np.load(path)
            if cached.shape[0] == len(texts):
                return cached
        except (OSError, ValueError) as err:
            log.warning("watchdog cache %s is corrupt (%s); recomputing", path, err)
    vectors = embed(texts, cfg.embedding, cfg.device)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    return vectors


def train_default(cfg: ClassifierConfig, cache_dir: str | Path, split: str = "train") -> IntentClassifier:
    """The classifier trained on the shipped intent data set's training split."""
    data = intents.load(split)
    texts = [x.text for x in data]
    return IntentClassifier(cfg).fit(texts, [x.label for x in data], cached_embeddings(texts, cfg, cache_dir))


def precision_recall(predicted: Sequence[bool], labels: Sequence[int]) -> dict[str, float]:
    p, y = np.asarray(predicted, bool), np.asarray(labels) == 1
    tp, fp, fn = int((p & y).sum()), int((p & ~y).sum()), int((~p & y).sum())
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "tp": tp, "fp": fp, "fn": fn,
            "tn": int((~p & ~y).sum()), "n": len(y)}
