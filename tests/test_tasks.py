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
