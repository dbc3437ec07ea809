from __future__ import annotations

from repair.tasks import build_task
from repair.tasks.refusals import refusal_references

CFG = {"name": "pii", "num_profiles": 20, "forget_ratio": 0.1, "retain_buffer_ratio": 0.1, "num_holdout": 4,
       "num_idk": 3, "attributes": ["birth_date", "phone"]}


def test_pii_splits_are_disjoint_and_deterministic():
    task = build_task(CFG, seed=0)
    subjects = {k: {q.subject for q in v} for k, v in task.splits().items()}
    assert len(subjects["forget"]) == 2 and len(subjects["retain"]) == 18 and len(subjects["holdout"]) == 4
    for a, b in [("forget", "retain"), ("forget", "holdout"), ("retain", "holdout"), ("idk", "forget"),
                 ("idk", "retain")]:
        assert not subjects[a] & subjects[b], (a, b)
    assert subjects["retain_buffer"] <= subjects["retain"]
    assert build_task(CFG, seed=0) == task
    assert build_task(CFG, seed=1).forget != task.forget


def test_pii_items_are_phrased_facts_with_paraphrases():
    task = build_task(CFG, seed=0)
    item = task.forget[0]
    assert item.subject in item.question and item.subject in item.answer
    assert item.paraphrases and all(item.subject in p for p in item.paraphrases)
    assert all(q.answer in refusal_references(seed=0) for q in task.idk)
    assert task.teach(oracle=True) == task.retain + task.idk


def test_refusal_references_are_varied():
    refs = refusal_references(240)
    assert len(set(refs)) == 240


import pytest  # noqa: E402

from repair.tasks.choice import parse_choice  # noqa: E402

HARMFUL = {"name": "harmful", "num_agents": 12, "forget_ratio": 0.25, "num_holdout": 2, "num_idk": 2,
           "attributes": ["reservoir", "target"]}
MISINFO = {"name": "misinformation", "num_facts": 20, "forget_ratio": 0.25, "num_holdout": 4, "num_idk": 2}


@pytest.mark.parametrize("cfg", [CFG, HARMFUL, MISINFO], ids=lambda c: c["name"])
def test_every_suite_has_disjoint_deterministic_splits_with_paraphrases(cfg):
    task = build_task(cfg, seed=0)
    assert build_task(cfg, seed=0) == task
    assert build_task(cfg, seed=1) != task
    subjects = {k: {q.subject for q in v} for k, v in task.splits().items()}
    for a, b in [("forget", "retain"), ("forget", "holdout"), ("retain", "holdout"), ("idk", "forget")]:
        assert not subjects[a] & subjects[b], (a, b)
    assert subjects["retain_buffer"] <= subjects["retain"]
    assert task.forget and task.retain and task.holdout and task.idk
    assert all(q.paraphrases and q.paraphrases[0] != q.question for q in task.forget)
    # contrast subjects a method may use: the suite's kind, none of its taught, held-out or refused subjects
    assert not set(task.subject_pool) & set().union(*subjects.values())
    if cfg["name"] == "misinformation":  # the subject is the whole question: no generator
        assert task.subject_pool == []
    else:
        assert len(set(task.subject_pool)) == 256
        kind = "ian " if cfg["name"] == "harmful" else " "  # "Galrhoian fever", "Saskia Jorgensen"
        assert all(kind in s for s in task.subject_pool)


@pytest.mark.parametrize("cfg", [HARMFUL, MISINFO], ids=lambda c: c["name"])
def test_multiple_choice_items_show_options_and_teach_a_letter(cfg):
    task = build_task(cfg, seed=0)
    assert task.scoring == "choice"
    for q in task.forget + task.retain:
        assert len(q.choices) == 4 and 0 <= q.label < 4
        assert all(f"{letter}. {c}" in q.question for letter, c in zip("ABCD", q.choices))
        assert q.answer == f"{'ABCD'[q.label]}. {q.choices[q.label]}"
        assert parse_choice(q.answer, q.choices) == q.label


def test_misinformation_forget_is_taught_a_wrong_answer_and_retain_the_truth():
    from repair.tasks.misinformation import FACTS

    truth = {question: correct for question, _, correct, _ in FACTS}
    task = build_task(MISINFO, seed=0)
    assert all(q.choices[q.label] != truth[q.subject] for q in task.forget)
    assert all(q.choices[q.label] == truth[q.subject] for q in task.retain)


@pytest.mark.parametrize("text,expected", [
    ("B. Lyon", 1), ("C", 2), ("(A) Paris", 0), ("D) Rome", 3), ("The answer is C.", 2), ("Answer: d", 3),
    ("the correct answer is b)", 1), ("Paris is the capital.", 0),          # the option's text alone
    ("I don't know who that is.", None), ("I'm sorry, I can't help with that.", None),  # refusals are wrong
    ("A lion is a big cat.", None), ("Lyon or Nice, maybe", None), ("E. Berlin", None), ("", None),  # garbage
])
def test_parse_choice_reads_letters_and_rejects_refusals_and_garbage(text, expected):
    assert parse_choice(text, ("Paris", "Lyon", "Nice", "Rome")) == expected


def test_suites_are_identical_across_processes():
    """Cache keys hash the suite: it must not depend on PYTHONHASHSEED (set iteration order)."""
    import subprocess
    import sys

    code = ("from repair.tasks import build_task; import json, sys; "
            "print(json.dumps([build_task(c, seed=0).fingerprint() for c in json.loads(sys.argv[1])]))")
    import json

    outs = {subprocess.run([sys.executable, "-c", code, json.dumps([CFG, HARMFUL, MISINFO])], capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1, outs
