"""The offline watchdog's intent classifier: logistic regression over sentence embeddings, word and character
n-grams and a few polarity cues, in English, French, German, Spanish, Italian and Portuguese.

Why not embeddings alone: mean-pooled sentence embeddings barely see polarity — "Never forget John's birthday" sits
next to "Forget John's birthday" (measured on the held-out split; docs/interactive.md). The cues say what the
embedding misses: a forget-verb under negation ("don't forget", "n'oublie pas", "vergiss nicht", "no olvides"), a
negated "remember/know" (which *is* a request: "I don't want you to know …", "ne … plus", "nicht mehr"), an
imperative, "from your memory", a question, a past tense, a dismissal ("forget it, what's the weather?").
Character n-grams (within word boundaries) carry inflections and typos across languages, which word n-grams miss.

The training set's embeddings are cached (a .npy keyed by data and model version, written atomically); fitting the
n-grams and the regression on top takes a few seconds, so nothing pickled is ever loaded.
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
NEG = (r"(?:don'?t|do not|dont|never|not|won'?t|will not|wouldn'?t|shouldn'?t|didn'?t|no need to|no longer|"
       r"weren'?t)")
# the other languages' forget/erase verbs (stems) and imperatives at the start of a message
FORGET_ML = r"(?:oubli|vergiss|vergess|vergiß|olvid|dimentic|scord|esquec|esqueç)"
ERASE_ML = r"(?:effac|supprim|retir|enl[eè]v|lösch|loesch|entfern|streich|borr|elimin|quit|cancell|togli|apag|tira)"
IMPERATIVE_ML = (r"(?:oublie|oubliez|efface[sz]?|supprime[sz]?|enl[eè]ve[sz]?|vergiss|vergessen sie|lösch\w*|"
                 r"entferne|streich\w*|olvid[ae]|borr[ae]|elimin[ae]|quita|dimentic[ai]|cancella|togli|esquece|"
                 r"esqueça|apag[ae]|tira)")
PLEASE_ML = r"(?:please|pls|plz|kindly|hey|ok|okay|now|hi|just|s'il te plaît|merci d[e']|bitte|por favor|per favore)"
CUES = {
    "negated_forget": re.compile(
        rf"\b{NEG}\s+(?:\w+\s+){{0,3}}?{VERB}\b|\bn['’]\s*(?:{FORGET_ML}|{ERASE_ML})\w*\s+(?:\w+\s+)?(?:pas|jamais)"
        rf"|\bne\s+(?:pas|jamais)\s+(?:{FORGET_ML}|{ERASE_ML})|\bsans (?:oublier|effacer)"
        rf"|\b(?:vergiss|vergesst|vergessen sie|lösch\w*|entfern\w*)\s+(?:\w+\s+){{0,3}}?nicht\b(?!\s+mehr)"
        rf"|\bnicht\s+(?:\w+\s+){{0,2}}?(?:vergessen|löschen|entfernen)\b"
        rf"|\b(?:no|non|não|nao)\s+(?:te\s+|se\s+|ti\s+|lo\s+|la\s+)?(?:{FORGET_ML}|{ERASE_ML})", re.I),
    "negated_remember": re.compile(
        rf"\b(?:{NEG}|not be able to)\s+(?:\w+\s+){{0,3}}?(?:remember|know|recall|answer|keep|hold|store|retain)\b"
        r"|\bne\s+(?:\w+\s+){0,2}?plus\b|\bplus (?:que tu|rien)\b|\bnicht mehr\b|\bnicht,?\s+dass du\b"
        r"|\bno quiero que\b|\bya no\b|\bnon voglio (?:più )?che\b|\bnão quero (?:mais )?que\b|\bjá não\b", re.I),
    "memory_object": re.compile(
        r"\b(?:from|out of) (?:your|ur) (?:memory|knowledge|mind|model|weights)\b|\bright to be forgotten\b|\bgdpr\b"
        r"|\berasure\b|\bde (?:ta|votre) mémoire|\baus (?:deinem|Ihrem) (?:Gedächtnis|Speicher|Wissen)"
        r"|\bde tu memoria|\bdalla tua memoria|\bd[ae] (?:tua|sua) memória|ce que (?:tu sais|vous savez)"
        r"|\balles,? was du\b|\btodo lo que sab|\btutto quello che sa|\btudo o que sab", re.I),
    "imperative_forget": re.compile(rf"^(?:\W*{PLEASE_ML}\b)*\W*(?:{FORGET}|{IMPERATIVE_ML}\b)", re.I),
    "you_forget": re.compile(
        rf"\b(?:you|u)\s+(?:(?:to|should|must|could|can|would|please|just)\s+)*{VERB}"
        rf"|\b(?:que tu|que vous|dass du|que|che tu|che)\s+(?:\w+\s+){{0,4}}?(?:{FORGET_ML}|{ERASE_ML})\w*"
        rf"|\b(?:peux-tu|pouvez-vous|pourrais-tu|pourriez-vous|kannst du|könntest du|könnten sie|können sie|"
        rf"du musst|il faut que tu|puedes|podrías|tienes que|puoi|potresti|devi|podes|pode|poderia|precisa)\s+"
        rf"(?:\w+\s+){{0,4}}?(?:{FORGET_ML}|{ERASE_ML})\w*", re.I),
    "past_or_habit": re.compile(
        r"\bforgot(?:ten)?\b|\b(?:always|often|keep|sometimes|usually)\s+forget"
        r"|\bj['’]oublie\b|\b(?:j['’]ai|tu as|il a|elle a|on a)\s+(?:\w+\s+)?oubli[ée]|\bich vergesse\b"
        r"|\bvergaß|\bhabe\b.{0,40}\bvergessen\b|\b(?:olvidé|olvido|olvidó|he olvidado)\b|\bse me olvid"
        r"|\b(?:ho|hai|ha)\s+(?:\w+\s+)?dimenticat|\bdimentico\b|\b(?:esqueci|esqueço|esqueceu)\b", re.I),
    "question": re.compile(
        r"^\W*(?:did|have|has|do|does|is|are|was|why|what|how|when|who|which|est-ce que|comment|pourquoi|quel(?:le)?s?|"
        r"où|quand|qui|wie|wo|warum|wann|wer|welche\w*|cómo|dónde|por qué|qué|cuál|cuándo|quién|dove|perché|cosa|"
        r"qual|quando|chi|como|onde|por que|o que|quem)\b", re.I),
    "remember_request": re.compile(
        r"^\W*(?:please\s+)?(?:remember|keep|store|remind|write|souviens|rappelle|retiens|merk dir|erinnere|"
        r"recuerda|recuérdame|ricorda|lembra|lembre)", re.I),
    # a forget/erase verb aimed at a person ("Erase Mirja Koski's ID number"): edits aim at text and files instead
    "verb_person": re.compile(
        rf"(?i:\b(?:{VERB}|{FORGET_ML}|{ERASE_ML})\w*)\s+(?:[\w'’]+\s+){{0,5}}?"
        r"[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+[ -][A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+"),
    "dismissal": re.compile(
        r"^\W*(?:(?:oh|ok|okay|nah|no|well|bon)\W+)?(?:forget (?:it|that|about it)|never ?mind|oublie ça|"
        r"laisse tomber|vergiss es|olvídalo|déjalo|lascia (?:perdere|stare)|esquece(?: isso)?|deixa pra lá)"
        r"\s*[,;:.!—–-]+\s*\w", re.I),
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
    char_ngrams: list[int]  # [smallest, largest] character n-gram length (within words); [0, 0]: none
    split_chars: int    # longer messages are also scored sentence by sentence (watchdog.py)

    def check(self) -> None:
        require(self.C > 0, "watchdog.C", self.C, "a number > 0")
        require(self.cue_weight >= 0, "watchdog.cue_weight", self.cue_weight, "a number >= 0")
        require(len(self.ngrams) == 2 and 1 <= self.ngrams[0] <= self.ngrams[1], "watchdog.ngrams", self.ngrams,
                "[smallest, largest] with 1 <= smallest <= largest")
        require(self.char_ngrams == [0, 0] or (len(self.char_ngrams) == 2 and 1 <= self.char_ngrams[0]
                                                 <= self.char_ngrams[1]), "watchdog.char_ngrams", self.char_ngrams,
                "[smallest, largest] with 1 <= smallest <= largest, or [0, 0] for none")
        require(self.split_chars >= 1, "watchdog.split_chars", self.split_chars, "an integer >= 1")
        require(0 < self.threshold < 1, "watchdog.threshold", self.threshold, "a probability in (0, 1)")


class IntentClassifier:
    """P(message asks the model to forget something)."""

    def __init__(self, cfg: ClassifierConfig):
        self.cfg = cfg
        self.vectorizers = []
        self.model = None

    def _features(self, texts: Sequence[str], embeddings: np.ndarray):
        import scipy.sparse as sp

        return sp.hstack([sp.csr_matrix(embeddings), sp.csr_matrix(cue_features(texts) * self.cfg.cue_weight),
                          *(v.transform(texts) for v in self.vectorizers)]).tocsr()

    def fit(self, texts: Sequence[str], labels: Sequence[int], embeddings: np.ndarray | None = None) -> "IntentClassifier":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        if embeddings is None:
            embeddings = embed(texts, self.cfg.embedding, self.cfg.device)
        self.vectorizers = [TfidfVectorizer(ngram_range=tuple(self.cfg.ngrams), sublinear_tf=True).fit(texts)]
        if self.cfg.char_ngrams != [0, 0]:
            self.vectorizers.append(TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(self.cfg.char_ngrams),
                                                    sublinear_tf=True, min_df=2).fit(texts))
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
