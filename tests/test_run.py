"""End to end: the runner, the Hydra CLI, results.json, W&B offline, and GA really forgetting."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from repair.runner import run
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"method", "task", "patient", "seed", "metrics", "protocol", "runtime_s", "peak_rss_mb", "config",
               "versions", "implant", "unlearn"}


def check_results(path: Path, method: str) -> dict:
    results = json.loads(path.read_text())
    assert RESULT_KEYS <= set(results)
    assert results["method"] == method and results["task"] == "pii" and results["patient"] == "tiny"
    for stage in ("before", "after"):
        assert {"f_rl", "r_rl", "ppl"} <= set(results["metrics"][stage])
        assert all(0.0 <= results["metrics"][stage][k] <= 1.0 for k in ("f_rl", "r_rl"))
    assert {"load", "implant", "unlearn", "eval"} <= set(results["runtime_s"])
    assert set(results["versions"]) == {"repair", "torch", "transformers"}
    assert results["config"]["method"]["name"] == method  # resolved config, not interpolations
    assert results["protocol"]["scorer"] == "generation"
    return results


def test_ga_forgets_and_writes_complete_results(make_cfg, implanted, tmp_path):
    patient, task, state = implanted
    cfg = make_cfg("method=ga", "method.lr=1e-3")
    results = run(cfg, tmp_path)
    res = check_results(tmp_path / "results.json", "ga")
    before, after = res["metrics"]["before"], res["metrics"]["after"]
    assert before["f_rl"] >= 0.9
    assert after["f_rl"] <= before["f_rl"] - 0.5, (before, after)
    assert res["implant"]["cached"] and res["unlearn"]["steps"] >= 1
    assert json.loads(json.dumps(results, default=str)) == res  # the returned dict is what was written


def test_no_unlearning_changes_nothing(make_cfg, implanted, tmp_path):
    res = run(make_cfg("method=none"), tmp_path)
    assert res["metrics"]["before"] == res["metrics"]["after"]


def test_wandb_offline_run_holds_summary_metrics(make_cfg, implanted, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run(make_cfg("logger=wandb", "method=none"), tmp_path)
    summaries = list(tmp_path.glob("wandb/offline-run-*/files/wandb-summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert {"before/f_rl", "after/f_rl", "after/r_rl", "runtime_s/implant", "peak_rss_mb"} <= set(summary)
    assert summary["after/f_rl"] == json.loads((tmp_path / "results.json").read_text())["metrics"]["after"]["f_rl"]
    assert list(summaries[0].parent.glob("media/table/generations_*.table.json"))  # per-sample generations


def test_bad_hyperparameters_fail_before_training(make_cfg, implanted, tmp_path):
    with pytest.raises(ValueError, match=r"method.lr = -0.1 is invalid; valid: a number > 0"):
        run(make_cfg("method=ga", "method.lr=-0.1"), tmp_path)
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \[7\]; valid: 0..1"):
        run(make_cfg("method=ga", "method.train_layers=[0,7]"), tmp_path)
    assert not (tmp_path / "results.json").exists()


def _cli(args: list[str], cache_dir: Path, multirun: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "run.py", *(["-m"] if multirun else []), *TINY, f"cache_dir={cache_dir}",
           "eval.paraphrases=false", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_cli_single_run_and_multirun(cache_dir, implanted, tmp_path):
    single = _cli([f"hydra.run.dir={tmp_path / 'single'}", "method=none"], cache_dir)
    assert single.returncode == 0, single.stderr[-3000:]
    check_results(tmp_path / "single" / "results.json", "none")
    assert (tmp_path / "single" / ".hydra" / "config.yaml").exists()

    multi = _cli([f"hydra.sweep.dir={tmp_path / 'sweep'}", "method=none,ga"], cache_dir,
                 multirun=True)
    assert multi.returncode == 0, multi.stderr[-3000:]
    found = sorted((tmp_path / "sweep").glob("*/results.json"))
    assert [p.parent.name for p in found] == ["0_none_pii_tiny_s0", "1_ga_pii_tiny_s0"]
    for path, method in zip(found, ["none", "ga"]):
        check_results(path, method)


def test_cli_bad_method_lists_choices(cache_dir, tmp_path):
    bad = _cli([f"hydra.run.dir={tmp_path}", "method=gradient_ascent"], cache_dir)
    assert bad.returncode != 0
    assert "gradient_ascent" in bad.stderr and "ga" in bad.stderr and "none" in bad.stderr
