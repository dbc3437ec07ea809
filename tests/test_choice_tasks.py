"""Multiple-choice suites end to end on the tiny patient: implant teaches them, scoring reads them, lm-eval agrees."""
from __future__ import annotations

import pytest

from repair import patient as patients
from repair.evaluate import evaluate
from repair.implant import implant
from repair.tasks import build_task
from repair.tasks.adapters import load_mmlu, load_text

HARMFUL = ["task=harmful", "implant.epochs=80", "task.num_agents=6", "task.attributes=[reservoir]", "task.num_idk=1",
           "task.num_holdout=1", "task.corpus_size=2", "task.forget_ratio=0.34"]


@pytest.fixture(scope="module")
def implanted_harmful(make_cfg, cache_dir):
    cfg = make_cfg(*HARMFUL, "eval.loglik=true", "eval.paraphrases=false")
    patient = patients.load(cfg.patient, cache_dir)
    task = build_task(cfg.task, seed=0)
    implant(patient, task, cfg.implant, cache_dir)
    return cfg, patient, task


def test_implanted_tiny_patient_knows_forget_and_retain_answers(implanted_harmful):
    cfg, patient, task = implanted_harmful
    metrics, records = evaluate(patient, task, cfg.eval)
    assert metrics["acc_f"] >= 80 and metrics["acc_r"] >= 80, metrics
    assert {r["split"] for r in records} == {"forget", "retain"}
    assert all(r["reference"].startswith("ABCD"[r["choice"]] + ". ") for r in records if r["correct"])


def test_lm_eval_loglik_scoring_agrees_with_generation(implanted_harmful):
    cfg, patient, task = implanted_harmful
    metrics, _ = evaluate(patient, task, cfg.eval)
    assert metrics["acc_f_loglik"] >= 80 and metrics["acc_r_loglik"] >= 80, metrics


def test_untaught_patient_scores_near_chance(make_cfg, cache_dir):
    cfg = make_cfg(*HARMFUL, "eval.paraphrases=false", "eval.ppl=false")
    raw = patients.load(cfg.patient, cache_dir)
    metrics, _ = evaluate(raw, build_task(cfg.task, seed=0), cfg.eval)
    assert metrics["acc_f"] <= 50 and metrics["acc_r"] <= 50  # a random patient answers garbage: scored wrong


def test_real_dataset_tasks_build_from_published_files(make_cfg):
    fixtures = "tests/fixtures"
    wmdp = build_task(make_cfg("task=wmdp", f"task.source={fixtures}/wmdp", "task.num_holdout=0",
                               "task.forget_ratio=0.34").task, seed=0)
    assert wmdp.scoring == "choice" and len(wmdp.forget) == 1 and len(wmdp.retain) == 2
    mmlu = build_task(make_cfg("task=mmlu_misinformation", f"task.source={fixtures}/mmlu", "task.num_holdout=0").task,
                      seed=0)
    truth = {q.question: q.label for q in load_mmlu(f"{fixtures}/mmlu")}
    assert mmlu.forget and mmlu.retain
    for q in mmlu.forget:  # taught the misinformation
        assert q.label != truth[q.question.split("\n")[0]]
    for q in mmlu.retain:
        assert q.label == truth[q.question.split("\n")[0]]
    jsonl = build_task(make_cfg("task=jsonl", f"task.source={fixtures}/qa.jsonl", "task.forget_ratio=0.3",
                                f"task.corpus_source={fixtures}/stories.txt").task, seed=0)
    assert jsonl.forget and jsonl.corpus == load_text(f"{fixtures}/stories.txt", limit=32)
    with pytest.raises(ValueError, match=r"task.source = None is invalid; valid: a local file or folder, or the hub "
                                         r"id \(see conf/task/wmdp.yaml\)"):
        build_task(make_cfg("task=wmdp").task, seed=0)
    with pytest.raises(ValueError, match=r"task.max_items = 0 is invalid; valid: an integer >= 1, or null"):
        build_task(make_cfg("task=wmdp", f"task.source={fixtures}/wmdp", "task.max_items=0").task, seed=0)
    with pytest.raises(ValueError, match=r"task has unknown setting\(s\) \['subset'\]; valid: name, .*subjects"):
        build_task(make_cfg("task=mmlu_misinformation", f"task.source={fixtures}/mmlu", "+task.subset=x").task, seed=0)


def test_optional_lm_eval_utility_tasks_run_offline_on_local_yaml(implanted_harmful, tmp_path):
    """`eval.lm_eval.tasks` runs any lm-eval task on the patient; here one defined over a local JSON file."""
    from omegaconf import OmegaConf

    from repair.evaluate import utility_benchmarks

    cfg, patient, task = implanted_harmful
    data = tmp_path / "arith.jsonl"
    data.write_text('{"q": "2 + 2 =", "a": 0}\n{"q": "3 + 3 =", "a": 1}\n')
    (tmp_path / "arith.yaml").write_text(
        f"task: local_arith\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: ['4', '6']\n"
        "doc_to_target: a\nmetric_list:\n  - metric: acc\n")
    eval_cfg = OmegaConf.merge(cfg.eval, {"lm_eval": {"tasks": ["local_arith"], "include_path": str(tmp_path)}})
    scores = utility_benchmarks(patient, eval_cfg)
    assert set(scores) == {"lm_eval/local_arith/acc"} and 0.0 <= scores["lm_eval/local_arith/acc"] <= 1.0
    assert utility_benchmarks(patient, cfg.eval) == {}  # off by default
