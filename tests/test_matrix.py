"""Every method runs end to end on every task and adapter (tiny patient), and records its task's metrics.

The method list is read from `conf/method/`, so a new method joins the matrix with its YAML. Each run is as short as
the code path allows (two training steps, a few contrasts, a few generated tokens): what is checked here is that
every combination completes with the metrics its scoring promises; forgetting itself is tested elsewhere.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from repair.runner import run
from tests.conftest import CONF

FIXTURES = Path(__file__).parent / "fixtures"
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
SHORT = ["eval.max_new_tokens=12", "task.corpus_size=2", "implant.epochs=3", "implant.stop_loss=null",
         "++implant.min_recall=null"]
METHOD_SHORT = {  # ++: only the keys a method has; the rest of its config is its own
    "training": ["++method.max_steps=2", "++method.batch_size=4"],
    "stamp": ["method.contrast_prompts=8", "method.calibrate_steps=2", "method.calibrate_checks=1",
              "method.check_tokens=8"],
}
WORDS = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron", "iris", "juniper", "kestrel",
         "lumen"]


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """Small files in each adapter's published layout (the repo's fixtures are too small to split for some)."""
    root = tmp_path_factory.mktemp("matrix_data")
    choice_rows = [{"question": f"Which sample is the {w} strain kept in?", "subject": w,
                    "choices": [f"vial {i}", f"flask {i}", f"tube {i}", f"dish {i}"], "answer": i % 4}
                   for i, w in enumerate(WORDS[:8])]
    free_rows = [{"question": f"What is the {w} code?", "answer": f"The {w} code is {100 + 7 * i}.",
                  "paraphrases": [f"Tell me the {w} code."]} for i, w in enumerate(WORDS[:8])]
    tofu = [{"question": f"What did author {a} write about {w}?", "answer": f"Author {a} wrote about {w} at length.",
             "paraphrased_question": f"Which topic, {w}, did author {a} cover?"}
            for a in range(3) for w in (WORDS * 2)[:20]]  # TOFU: 20 consecutive questions per author
    return {"jsonl_choice": _write_jsonl(root / "choice.jsonl", choice_rows),
            "jsonl_free": _write_jsonl(root / "free.jsonl", free_rows),
            "tofu": _write_jsonl(root / "tofu.jsonl", tofu)}


TASKS = {  # name: (overrides, scoring); `{...}` is filled from the `sources` fixture
    "pii": ([], "rouge"),
    "harmful": (["task.num_agents=4", "task.num_holdout=1", "task.num_idk=1", "task.attributes=[reservoir,target]"],
                "choice"),
    "misinformation": (["task.num_facts=6", "task.num_holdout=1", "task.num_idk=1"], "choice"),
    "wmdp": ([f"task.source={FIXTURES / 'wmdp'}", "task.num_holdout=0"], "choice"),
    "mmlu_misinformation": ([f"task.source={FIXTURES / 'mmlu'}", "task.num_holdout=1"], "choice"),
    "tofu": (["task.source={tofu}", "task.forget_ratio=0.34"], "rouge"),
    "jsonl_free": (["task=jsonl", "task.source={jsonl_free}", "task.forget_ratio=0.25", "task.num_holdout=1"],
                   "rouge"),
    "jsonl_choice": (["task=jsonl", "task.source={jsonl_choice}", "task.forget_ratio=0.25", "task.num_holdout=1"],
                     "choice"),
}
METRICS = {"rouge": {"f_rl", "r_rl", "ppl"}, "choice": {"acc_f", "acc_r", "ppl"}}


def _overrides(task: str, method: str, sources: dict[str, str]) -> list[str]:
    extra, _ = TASKS[task]
    extra = [o.format(**sources) for o in extra]
    if not any(o.startswith("task=") for o in extra):
        extra.insert(0, f"task={task}")
    kind = "stamp" if method.startswith("stamp") else "none" if method == "none" else "training"
    tiny = ["method.layer=1"] if method == "rmu" else []  # its default layer 7 is the default patient's
    return [f"method={method}", *SHORT, *METHOD_SHORT.get(kind, []), *tiny, *extra]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", list(TASKS))
def test_method_runs_on_task(task, method, sources, make_cfg, tmp_path):
    cfg = make_cfg(*_overrides(task, method, sources))
    results = run(cfg, tmp_path)
    scoring = TASKS[task][1]
    assert ("accuracy" in results["protocol"]) == (scoring == "choice")
    for stage in ("before", "after"):
        metrics = results["metrics"][stage]
        assert METRICS[scoring] <= set(metrics), (stage, sorted(metrics))
        assert all(isinstance(v, (int, float)) and not math.isnan(v) for v in metrics.values()), metrics
        for key in METRICS[scoring] - {"ppl"}:
            assert 0 <= metrics[key] <= (100 if scoring == "choice" else 1), (key, metrics[key])
    if method == "none":
        assert results["metrics"]["before"] == results["metrics"]["after"]
    phases = results["unlearn"]["phases"]  # where the unlearning time went; phases do not overlap
    expected = {"none": set(), "stamp": {"forget_keys", "forget_logits", "contrast_keys", "solve", "apply",
                                         "calibration_passes"}}.get(kind := method.split("_")[0], {"encode", "train"})
    assert expected <= set(phases), (method, phases)
    assert sum(phases.values()) <= results["runtime_s"]["unlearn"] + 1e-3, (phases, results["runtime_s"])
    if kind == "stamp":  # where the held keys came from: memory, the key store on disk, or forward passes
        counts = results["unlearn"]["key_cache"]
        assert {"held", "contrast"} <= set(counts) and all(sum(c.values()) >= 1 for c in counts.values()), counts
    assert (tmp_path / "results.json").exists()
