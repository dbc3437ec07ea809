"""A bad value fails before any slow step, naming the value and the valid choices (issue #14); metrics that would
silently mean something else are left out."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from repair import evaluate as evaluation
from repair.patient import PATIENT_SOURCES, check_config, hf_location, load, resolve_device
from repair.runner import run
from repair.tasks import build_task, min_taught

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def no_slow_steps(monkeypatch):
    """The runner may build and validate, but never load weights or implant."""
    def slow(*args, **kwargs):
        raise AssertionError("a slow step ran before the bad value was reported")

    monkeypatch.setattr("repair.runner.implant", slow)
    monkeypatch.setattr("repair.patient.load", slow)


@pytest.fixture
def no_transformers(monkeypatch):
    """Any model or tokenizer load (and so any hub request) is a failure; the hub is off too."""
    import transformers

    def load(*args, **kwargs):
        raise AssertionError(f"transformers was asked to load {args[:1]} {kwargs}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", load)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", load)


# ------------------------------------------------------------------------------------------------- 1. eval config

BAD_EVAL = [
    ("eval.batch_size=0", r"eval.batch_size = 0 is invalid; valid: an integer >= 1"),
    ("eval.max_new_tokens=0", r"eval.max_new_tokens = 0 is invalid; valid: an integer >= 1"),
    ("eval.max_new_tokens=2.5", r"eval.max_new_tokens = 2.5 is invalid"),
    ("eval.max_samples=0", r"eval.max_samples = 0 is invalid; valid: null \(every item\) or an integer >= 1"),
    ("eval.paraphrases=maybe", r"eval.paraphrases = 'maybe' is invalid; valid: true or false"),
    ("eval.lm_eval.tasks=mmlu", r"eval.lm_eval.tasks = 'mmlu' is invalid; valid: a list"),
    ("eval.lm_eval.tasks=['']", r"eval.lm_eval.tasks = \[''\] is invalid; valid: a list of lm-eval task names"),
    ("eval.lm_eval.include_path=/nonexistent/tasks", r"eval.lm_eval.include_path = '/nonexistent/tasks' is invalid"),
    ("eval.lm_eval.limit=0", r"eval.lm_eval.limit = 0 is invalid"),
    # a misspelled key fails naming the valid ones, in the eval section and in an attack's
    ("+eval.max_sample=16", r"eval has unknown setting\(s\) \['max_sample'\]; valid: max_new_tokens, batch_size, "
                            r"max_samples, paraphrases, ppl, loglik, lm_eval, attacks"),
    ("+eval.lm_eval.task=[mmlu]", r"eval.lm_eval has unknown setting\(s\) \['task'\]; valid: tasks, include_path, "
                                  r"limit"),
    ("+eval.attacks.mia.k=5", r"eval.attacks.mia has unknown setting\(s\) \['k'\]; valid: k_percent, oracle_auc, "
                              r"batch_size, seed"),
]


@pytest.mark.parametrize("override,message", BAD_EVAL)
def test_bad_eval_values_fail_before_any_slow_step(make_cfg, tmp_path, no_slow_steps, override, message):
    with pytest.raises(ValueError, match=message):
        run(make_cfg("method=none", override), tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_documented_eval_configs_are_valid(make_cfg):
    settings = evaluation.validate_eval(make_cfg().eval)
    assert (settings.max_new_tokens, settings.max_samples, settings.lm_eval.tasks) == (48, None, [])
    evaluation.validate_eval(make_cfg("eval.max_samples=16", "eval.paraphrases=false", "eval.lm_eval.limit=0.5",
                                      "eval.lm_eval.tasks=[mmlu]", f"eval.lm_eval.include_path={FIXTURES}").eval)


def test_eval_settings_have_no_second_default_in_code(make_cfg):
    """A hand-written eval section lacking a setting fails, pointing at the YAML where the defaults live."""
    with pytest.raises(ValueError, match=r"eval lacks setting\(s\) \['attacks', 'lm_eval', 'loglik', 'max_samples', "
                                         r"'paraphrases', 'ppl'\]; their defaults live in its YAML under conf/"):
        evaluation.validate_eval({"max_new_tokens": 16, "batch_size": 4})


# ------------------------------------------------------------------------------------------------------ 2. device

def test_cuda_without_cuda_names_the_value_and_the_valid_choices(make_cfg, cache_dir, tmp_path, monkeypatch,
                                                                 no_slow_steps):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=rf"patient.device='{device}': CUDA is not available here .*"
                                             r"valid choices on this machine: auto, cpu$"):
            resolve_device(device)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; valid choices: auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="CUDA is not available here"):  # in the runner: before any weights load
        run(make_cfg("method=none", "patient.device=cuda"), tmp_path)


def test_cuda_index_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"patient.device='cuda:2': this machine has 2 CUDA device\(s\); "
                                         r"valid choices on this machine: auto, cpu, cuda, cuda:0, cuda:1"):
        resolve_device("cuda:2")


def test_load_checks_the_device_before_building_weights(make_cfg, cache_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def build(*args):
        raise AssertionError("weights were built before the device was checked")

    monkeypatch.setitem(PATIENT_SOURCES._items, "tiny", build)
    with pytest.raises(ValueError, match="CUDA is not available here"):
        load(make_cfg("patient.device=cuda").patient, cache_dir)
    with pytest.raises(ValueError, match=r"unknown dtype 'float8'; valid choices: auto, float32"):
        load(make_cfg("patient.dtype=float8").patient, cache_dir)


# --------------------------------------------------------------------------------------- 3. hf model location

@pytest.fixture
def in_project(tmp_path, monkeypatch):
    """A working folder with a `models/` folder holding one model folder."""
    (tmp_path / "models" / "llama-a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", ["./models/x", "/nonexistent/x", "models/my-llama", "../models/x",
                                  "~/nonexistent-repair-model", "models/a/b", "models\\x", "models/x/"])
def test_missing_local_model_paths_fail_without_a_hub_request(make_cfg, cache_dir, in_project, no_transformers, name):
    cfg = make_cfg("patient=hf").patient
    cfg.name_or_path = name
    with pytest.raises(ValueError, match=r"patient.name_or_path=.*: no such local folder .*valid: an existing local "
                                         r"folder, or a hub id 'owner/name'"):
        load(cfg, cache_dir)


def test_owner_name_next_to_a_local_folder_of_that_owner_is_a_path(in_project, no_transformers):
    with pytest.raises(ValueError, match=r"'models/my-llama': no such local folder .*it is read as a local path "
                                         r"because models/ is a folder here \(it holds: llama-a\)"):
        hf_location("models/my-llama")


def test_hub_ids_and_existing_folders_stay_valid(make_cfg, cache_dir, in_project, monkeypatch):
    assert hf_location("meta-llama/Meta-Llama-3-8B-Instruct") == ("hub", "meta-llama/Meta-Llama-3-8B-Instruct")
    assert hf_location("gpt2") == ("hub", "gpt2")
    assert hf_location("models/llama-a") == ("local", "models/llama-a")
    check_config({"source": "hf", "name_or_path": "owner/model", "device": "cpu", "dtype": "auto"})
    import transformers

    calls = []

    def record(name, **kwargs):
        calls.append((str(name), kwargs))
        raise RuntimeError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record)
    cfg = make_cfg("patient=hf", "patient.device=cpu").patient
    cfg.name_or_path = str(in_project / "models" / "llama-a")
    with pytest.raises(RuntimeError, match="stop here"):
        load(cfg, cache_dir)
    assert calls[0][1]["local_files_only"] is True  # a local folder never falls back to the hub


def test_runner_reports_a_missing_model_folder_before_the_implant(make_cfg, tmp_path, in_project, no_transformers,
                                                                  no_slow_steps):
    with pytest.raises(ValueError, match="'models/my-llama': no such local folder"):
        run(make_cfg("patient=hf", "patient.name_or_path=models/my-llama", "method=none"), tmp_path / "out")


# ----------------------------------------------------------------------------------------------- 4. split sizes

def test_empty_source_says_it_has_no_questions(make_cfg, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=rf"{empty}: no questions; task=jsonl needs at least 2 subjects"):
        build_task(make_cfg("task=jsonl", f"task.source={empty}").task, seed=0)


def test_real_task_too_small_for_its_splits_says_what_each_needs(make_cfg, tmp_path, no_slow_steps):
    cfg = make_cfg("task=wmdp", f"task.source={FIXTURES / 'wmdp'}", "method=none")  # 3 questions, num_holdout 10
    message = (r"task wmdp: .*wmdp gives 3 question\(s\) in 3 subject\(s\) \(one per question\); the splits need at "
               r"least 12: task.num_holdout=10 takes 10, then forget needs >= 1 and retain >= 1 .* "
               r"To fix: lower task.num_holdout, or use a source with more questions")
    with pytest.raises(ValueError, match=message):
        run(cfg, tmp_path)
    with pytest.raises(ValueError, match=r"gives 2 question\(s\) \(the first 2 of 3, task.max_items\) .* at least 5: "
                                         r".*task.forget_ratio=0.9 gets from 5. To fix: lower task.forget_ratio, or "
                                         r"raise task.max_items"):
        build_task(make_cfg("task=wmdp", f"task.source={FIXTURES / 'wmdp'}", "task.num_holdout=0",
                            "task.max_items=2", "task.forget_ratio=0.9").task, seed=0)


@pytest.mark.parametrize("task,size,what", [("pii", "num_profiles", "profiles"), ("harmful", "num_agents", "agents"),
                                            ("misinformation", "num_facts", "facts")])
def test_builtin_suite_too_small_says_what_the_split_needs(make_cfg, task, size, what):
    with pytest.raises(ValueError, match=rf"too few taught {what} to split: 1; forget needs >= 1 and retain >= 1 .*"
                                         rf"needs at least 2; raise task.{size}"):
        build_task(make_cfg(f"task={task}", f"task.{size}=1").task, seed=0)


@pytest.mark.parametrize("override,message", [
    ("task.num_holdout=-1", r"task.num_holdout = -1 is invalid; valid: an integer >= 0"),
    ("task.num_idk=-2", r"task.num_idk = -2 is invalid; valid: an integer >= 0"),
    ("task.num_profiles=-3", r"task.num_profiles = -3 is invalid; valid: an integer >= 0"),
    ("task.corpus_size=0", r"task.corpus_size = 0 is invalid; valid: an integer >= 1"),
    ("task.num_holdout=2.5", r"task.num_holdout = 2.5 is invalid; valid: an integer"),
    ("task.forget_ratio=most", r"task.forget_ratio = 'most' is invalid; valid: a number"),
    ("task.forget_ratio=1.0", r"task.forget_ratio = 1.0 is invalid; valid: a share in \(0, 1\)"),
    ("task.retain_buffer_ratio=-0.1", r"task.retain_buffer_ratio = -0.1 is invalid; valid: a share in \[0, 1\]"),
    ("task.forget_limit=0", r"task.forget_limit = 0 is invalid; valid: an integer >= 1, or null"),
    ("task.implant_epochs_scale=0", r"task.implant_epochs_scale = 0.0 is invalid; valid: a number > 0"),
    ("task.attributes=[phone,shoe_size]", r"unknown pii attribute\(s\) \['shoe_size'\]; valid choices: birth_date"),
])
def test_bad_task_settings_fail_naming_the_value(make_cfg, override, message):
    with pytest.raises(ValueError, match=message):
        build_task(make_cfg(override).task, seed=0)


def test_misinformation_asks_for_no_more_facts_than_it_has(make_cfg):
    with pytest.raises(ValueError, match=r"misinformation has 48 built-in facts; asked for task.num_facts=46 \+ "
                                         r"task.num_holdout=4; valid: num_facts \+ num_holdout <= 48"):
        build_task(make_cfg("task=misinformation", "task.num_facts=46").task, seed=0)


def test_min_taught():
    assert [min_taught(r) for r in (0.1, 0.5, 0.75, 0.9)] == [2, 2, 3, 5]


# ---------------------------------------------------------------------------------------------- 5. paraphrases

def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def fake_generate(monkeypatch):
    """Answers without a model: the key set of the metrics does not depend on what the patient says."""
    asked: list[str] = []

    def generate(patient, questions, *args, **kwargs):
        asked.extend(questions)
        return ["I don't know." for _ in questions]

    monkeypatch.setattr(evaluation, "generate", generate)
    return asked


def _evaluate(make_cfg, source: Path, *overrides: str):
    cfg = make_cfg("task=jsonl", f"task.source={source}", "task.forget_ratio=0.5", "eval.ppl=false", *overrides)
    task = build_task(cfg.task, seed=0)
    metrics, records = evaluation.evaluate(None, task, cfg.eval)
    return cfg, task, metrics, records


def test_no_paraphrase_metric_without_paraphrases(make_cfg, tmp_path, fake_generate):
    free = _jsonl(tmp_path / "free.jsonl", [{"question": f"Q{i}?", "answer": f"A{i}"} for i in range(4)])
    cfg, task, metrics, records = _evaluate(make_cfg, free)
    assert set(metrics) == {"f_rl", "r_rl"}
    assert {r["split"] for r in records} == {"forget", "retain"}
    assert evaluation.protocol(cfg.eval, task.scoring, task.forget)["paraphrases"] == \
        "off: the forget items have no paraphrases"

    choice = _jsonl(tmp_path / "choice.jsonl", [{"question": f"Q{i}?", "choices": ["x", "y"], "answer": 0}
                                                for i in range(4)])
    _, _, metrics, _ = _evaluate(make_cfg, choice)
    assert set(metrics) == {"acc_f", "acc_r"}


def test_paraphrase_metric_scores_only_items_that_have_one(make_cfg, tmp_path, fake_generate):
    rows = [{"question": f"Q{i}?", "answer": f"A{i}", "subject": f"s{i // 2}"} for i in range(8)]
    for row in rows[::2]:  # one of the two questions about each subject has a paraphrase
        row["paraphrases"] = [row["question"] + " (in other words)"]
    cfg, task, metrics, records = _evaluate(make_cfg, _jsonl(tmp_path / "mixed.jsonl", rows))
    assert len(task.forget) == 4  # 2 of 4 subjects, 2 questions each
    assert "f_rl_paraphrase" in metrics
    assert [r["question"] for r in records if r["split"] == "forget_paraphrase"] == \
        [q.paraphrases[0] for q in task.forget if q.paraphrases]
    assert evaluation.protocol(cfg.eval, task.scoring, task.forget)["paraphrases"] == \
        "on: each forget question's first paraphrase (2 of 4 forget items have one; the others are left out)"
    off = make_cfg("eval.paraphrases=false").eval
    assert evaluation.protocol(off, task.scoring, task.forget)["paraphrases"] == "off: eval.paraphrases=false"
