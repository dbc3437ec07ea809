from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from repair.settings import keys, plain
from repair.tasks import build_task, get_suite, task_settings
from repair.tasks.choice import parse_choice
from repair.tasks.refusals import refusal_references
from tests.conftest import CONF

# composed configs (defaults from conf/task/*.yaml), the sizes spelled out so the assertions below hold
PII = ["task=pii", "task.num_profiles=20", "task.forget_ratio=0.1", "task.retain_buffer_ratio=0.1",
       "task.num_holdout=4", "task.num_idk=3", "task.attributes=[birth_date,phone]"]
HARMFUL = ["task=harmful", "task.num_agents=12", "task.forget_ratio=0.25", "task.num_holdout=2", "task.num_idk=2",
           "task.attributes=[reservoir,target]"]
MISINFO = ["task=misinformation", "task.num_facts=20", "task.forget_ratio=0.25", "task.num_holdout=4",
           "task.num_idk=2"]


@pytest.fixture(scope="module")
def suite_cfg(make_cfg):
    """The task section composed with `overrides`."""
    return lambda overrides: make_cfg(*overrides, tiny=False).task


def test_pii_splits_are_disjoint_and_deterministic(suite_cfg):
    cfg = suite_cfg(PII)
    task = build_task(cfg, seed=0)
    subjects = {k: {q.subject for q in v} for k, v in task.splits().items()}
    assert len(subjects["forget"]) == 2 and len(subjects["retain"]) == 18 and len(subjects["holdout"]) == 4
    for a, b in [("forget", "retain"), ("forget", "holdout"), ("retain", "holdout"), ("idk", "forget"),
                 ("idk", "retain")]:
        assert not subjects[a] & subjects[b], (a, b)
    assert subjects["retain_buffer"] <= subjects["retain"]
    assert build_task(cfg, seed=0) == task
    assert build_task(cfg, seed=1).forget != task.forget


def test_pii_items_are_phrased_facts_with_paraphrases(suite_cfg):
    task = build_task(suite_cfg(PII), seed=0)
    item = task.forget[0]
    assert item.subject in item.question and item.subject in item.answer
    assert item.paraphrases and all(item.subject in p for p in item.paraphrases)
    assert all(q.answer in refusal_references(seed=0) for q in task.idk)
    assert task.teach(oracle=True) == task.retain + task.idk


def test_refusal_references_are_varied():
    refs = refusal_references(240)
    assert len(set(refs)) == 240


def _name(overrides: list[str]) -> str:
    return overrides[0].removeprefix("task=")


@pytest.mark.parametrize("overrides", [PII, HARMFUL, MISINFO], ids=_name)
def test_every_suite_has_disjoint_deterministic_splits_with_paraphrases(suite_cfg, overrides):
    cfg = suite_cfg(overrides)
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
    if cfg.name == "misinformation":  # the subject is the whole question: no generator
        assert task.subject_pool == []
    else:
        assert len(set(task.subject_pool)) == 256
        kind = "ian " if cfg.name == "harmful" else " "  # "Galrhoian fever", "Saskia Jorgensen"
        assert all(kind in s for s in task.subject_pool)


@pytest.mark.parametrize("overrides", [HARMFUL, MISINFO], ids=_name)
def test_multiple_choice_items_show_options_and_teach_a_letter(suite_cfg, overrides):
    task = build_task(suite_cfg(overrides), seed=0)
    assert task.scoring == "choice"
    for q in task.forget + task.retain:
        assert len(q.choices) == 4 and 0 <= q.label < 4
        assert all(f"{letter}. {c}" in q.question for letter, c in zip("ABCD", q.choices))
        assert q.answer == f"{'ABCD'[q.label]}. {q.choices[q.label]}"
        assert parse_choice(q.answer, q.choices) == q.label


def test_misinformation_forget_is_taught_a_wrong_answer_and_retain_the_truth(suite_cfg):
    from repair.tasks.misinformation import FACTS

    truth = {question: correct for question, _, correct, _ in FACTS}
    task = build_task(suite_cfg(MISINFO), seed=0)
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


def test_suites_are_identical_across_processes(suite_cfg):
    """Cache keys hash the suite: it must not depend on PYTHONHASHSEED (set iteration order)."""
    import json
    import subprocess
    import sys

    code = ("from repair.tasks import build_task; import json, sys; "
            "print(json.dumps([build_task(c, seed=0).fingerprint() for c in json.loads(sys.argv[1])]))")
    cfgs = json.dumps([plain(suite_cfg(o)) for o in (PII, HARMFUL, MISINFO)])
    outs = {subprocess.run([sys.executable, "-c", code, cfgs], capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1, outs


def test_fingerprints_are_those_of_the_cached_implants(suite_cfg):
    """The implant cache is keyed by the fingerprint: these are the suites' fingerprints before typed settings."""
    assert [build_task(suite_cfg(o), seed=0).fingerprint() for o in (PII, HARMFUL, MISINFO)] == \
        ["a95f72a69e6d7f11", "6d45ae5ed4fb307c", "8681b27312ae6e04"]


# ------------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "task").glob("*.yaml")))
def test_each_task_yaml_holds_exactly_its_settings(name):
    """Defaults live in the YAML only: every setting has a value there, and the YAML has no key the code ignores."""
    yaml = OmegaConf.load(CONF / "task" / f"{name}.yaml")
    assert sorted(yaml) == sorted(keys(get_suite(name).settings))


def test_a_misspelled_task_setting_fails_naming_the_valid_ones(make_cfg):
    with pytest.raises(ValueError, match=r"task has unknown setting\(s\) \['num_profile'\]; valid: name, "
                                         r"forget_ratio, .*num_profiles, attributes"):
        build_task(make_cfg("+task.num_profile=3").task, seed=0)


def test_a_hand_written_partial_task_config_fails_naming_what_it_lacks():
    with pytest.raises(ValueError, match=r"task lacks setting\(s\) \[.*'corpus_size'.*\]; their defaults live in "
                                         r"its YAML under conf/"):
        build_task({"name": "pii", "num_profiles": 4, "forget_ratio": 0.5}, seed=0)


def test_checked_settings_build_the_same_task(suite_cfg):
    cfg = suite_cfg(HARMFUL)
    settings = task_settings(cfg)
    assert type(settings).__name__ == "HarmfulSettings" and settings.attributes == ["reservoir", "target"]
    assert build_task(settings, seed=0) == build_task(cfg, seed=0)
    with pytest.raises(ValueError, match=r"task.num_agents = -1 is invalid; valid: an integer >= 0"):
        task_settings(plain(cfg) | {"num_agents": -1})
    with pytest.raises(ValueError, match=r"task.num_agents = 'many' is invalid; valid: an integer"):
        task_settings(plain(cfg) | {"num_agents": "many"})
    assert dataclasses.asdict(settings) == plain(cfg)


def test_pii_reaches_the_papers_2000_profiles_without_changing_smaller_tasks():
    """Up to 2,000 names every pii task draws from the same pool as ever (its profiles, and every cached implant, stay
    as they were); past that, names with a middle initial widen it (2,000 taught + holdout, unknown and contrast
    subjects need 2,263)."""
    from repair.tasks.pii import name_pool

    assert not any(". " in n for n in name_pool(2000)) and len(name_pool(2000)) == 2000
    assert name_pool(2001)[:2000] == name_pool(2000) and len(set(name_pool(2001))) == len(name_pool(2001))
    with pytest.raises(ValueError, match="pii supports at most 38000 profiles"):
        name_pool(40_000)
