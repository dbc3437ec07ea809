"""Experiment grids: recipes compose, launchers run a 2 × 2 grid, resume, tables and plots, the shared implant cache
under concurrent jobs, sequential requests and single-sample requests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from experiments import plots, tables
from experiments.collect import load_runs, sweep_grid
from repair import evaluate as evaluation
from repair.io import cached_dir
from repair.methods import build_method, load_builtin
from repair.metrics import METRICS, Metric, register_metric
from repair.resume import completed_results
from repair.runner import run
from repair.sequential import plan, split_requests
from repair.tasks import build_task
from tests.conftest import CONF, TINY

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER_METHODS = {"none", "stamp", "stamp_lowrank", "ga", "npo", "rmu", "flat", "wga", "asu"}


# ------------------------------------------------------------------------------------------------ recipes
def _compose(recipe: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"+experiment={recipe}", *overrides], return_hydra_config=True)


def _swept(params) -> dict[str, list[str]]:
    """Each swept key's values as Hydra's basic sweeper expands them (a `glob(...)` of a config group included);
    call inside an initialized Hydra, whose config loader lists the group's options."""
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    out = {}
    for override in parser.parse_overrides([f"{k}={v}" for k, v in params.items()]):
        out[override.key_or_group] = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                                      else [str(override.value())])
    return out


def _recipe_methods(recipe: str) -> list[str]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=[f"+experiment={recipe}"], return_hydra_config=True)
        return _swept(base.hydra.sweeper.params)["method"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_experiment_recipe_composes(recipe):
    """Every value of every swept key composes into a job that builds its method and task (default sizes), and
    every swept key is part of the job's folder name inside a fixed sweep dir (so a rerun resumes)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=[f"+experiment={recipe}"], return_hydra_config=True)
        params = _swept(base.hydra.sweeper.params)
        task_key = "paper_task" if "paper_task" in params else "task"  # paper_task: a task with the paper's sizes
        assert {"method", task_key, "seed"} <= set(params)
        sweep = OmegaConf.to_container(base.hydra.sweep)  # unresolved templates
        folder = sweep["subdir"] + ":" + OmegaConf.to_container(base)["run_name"]
        assert "${now" not in sweep["dir"]  # a fixed folder: the same command resumes
        for key, values in params.items():
            if len(values) > 1:
                named = {"method": "method.name", "task": "task.name", "paper_task": "task.name"}.get(key, key)
                assert "${" + named + "}" in folder, (key, folder)
        for i in range(max(len(v) for v in params.values())):  # every value of every key appears in some job
            job = {k: v[i % len(v)] for k, v in params.items()}
            overrides = [f"{'+' if k == 'paper_task' else ''}{k}={v}" for k, v in job.items()]
            cfg = compose("config", overrides=[f"+experiment={recipe}", *overrides], return_hydra_config=True)
            assert cfg.method.name == job["method"] and job[task_key].startswith(cfg.task.name)
            build_method(cfg.method)
            if "source" in cfg.task and cfg.task.source is None:  # real data the user points at: named clearly
                with pytest.raises(ValueError, match="task.source"):
                    build_task(cfg.task, int(cfg.seed))
                continue
            task = build_task(cfg.task, int(cfg.seed))  # forget_limit fits the default task sizes
            plan(task, cfg)  # sequential.steps fits the forget subjects
            assert cfg.hydra.sweep.dir.startswith(f"outputs/sweeps/{recipe.removesuffix('_oracle')}/")


def test_recipes_sweep_the_methods_of_the_config_group():
    """The recipes name their methods by glob over conf/method/ (its base/ folder holds shared settings, no method):
    every method of the paper, every one but Base, or a pattern."""
    assert set(load_builtin().names()) == PAPER_METHODS
    every = _recipe_methods("table2")
    assert sorted(every) == sorted(PAPER_METHODS) and "base" not in every
    assert _recipe_methods("single_sample") == every
    for recipe in ("scaling", "sequential"):
        assert sorted(_recipe_methods(recipe)) == sorted(PAPER_METHODS - {"none"})
    assert sorted(_recipe_methods("ablation_retain")) == ["ga", "stamp", "stamp_lowrank"]
    oracle = _compose("table2_oracle", ["method=none", "task=pii", "seed=0"])
    assert oracle.implant.oracle and oracle.hydra.sweep.dir == "outputs/sweeps/table2/smollm2_135m/oracle"


def test_sweep_grid_expands_a_glob_of_methods_as_hydra_does(tmp_path):
    """A sweep folder of a glob recipe: the table writer finds the same jobs as Hydra launched (its missing rows)."""
    cfg = _compose("scaling", [])
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        expected = _swept(cfg.hydra.sweeper.params)
    (tmp_path / "multirun.yaml").write_text(OmegaConf.to_yaml(cfg))
    _, jobs = sweep_grid(tmp_path / "multirun.yaml")
    assert sorted({j["method"] for j in jobs}) == sorted(expected["method"]) and "none" not in expected["method"]
    assert len(jobs) == len(expected["method"]) * len(expected["task.forget_limit"]) * len(expected["task"])


# ------------------------------------------------------------------------------------------------ hand-made folder
def _result(root: Path, folder: str, method: str, task: str, seed: int, after: dict, unlearn_s: float,
            oracle: bool = False, method_cfg: dict | None = None) -> None:
    metrics = {"before": dict(after), "after": after}
    config = {"method": {"name": method, **(method_cfg or {})}, "task": {"name": task},
              "implant": {"oracle": oracle}, "seed": seed, "patient": {"name": "tiny"}}
    res = {"method": method, "task": task, "patient": "tiny", "seed": seed, "metrics": metrics,
           "runtime_s": {"unlearn": unlearn_s}, "config": config, "unlearn": {}}
    (root / folder).mkdir(parents=True)
    (root / folder / "results.json").write_text(json.dumps(res))


def _failed_job(root: Path, folder: str, method: str, task: str, seed: int) -> None:
    (root / folder / ".hydra").mkdir(parents=True)
    config = {"method": {"name": method}, "task": {"name": task}, "implant": {"oracle": False}, "seed": seed}
    (root / folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def hand_made(tmp_path) -> Path:
    """A Table 2 sweep with two seeds: complete runs, one failed job, two jobs never started, an Oracle run."""
    root = tmp_path / "sweep"
    harm = {"none": [(80, 78, 6.0, 0), (82, 80, 6.2, 0)], "ga": [(0, 70, 7.0, 10), (10, 72, 7.4, 12)]}
    pii = {"none": [(0.9, 0.88, 6.0, 0), (0.92, 0.9, 6.2, 0)], "ga": [(0.1, 0.8, 7.1, 20), (0.2, 0.7, 7.3, 22)]}
    for method in ("none", "ga"):
        for seed in (0, 1):
            f, r, ppl, t = harm[method][seed]
            _result(root, f"{method}_harmful_s{seed}", method, "harmful", seed,
                    {"acc_f": f, "acc_r": r, "ppl": ppl}, t)
            f, r, ppl, t = pii[method][seed]
            _result(root, f"{method}_pii_s{seed}", method, "pii", seed, {"f_rl": f, "r_rl": r, "ppl": ppl}, t)
    _result(root, "stamp_harmful_s0", "stamp", "harmful", 0, {"acc_f": 0.0, "acc_r": 75.0, "ppl": 6.5}, 2.0)
    _failed_job(root, "stamp_harmful_s1", "stamp", "harmful", 1)  # crashed: config but no results.json
    _result(root, "oracle/oracle_pii_s0", "none", "pii", 0, {"f_rl": 0.3, "r_rl": 0.91, "ppl": 5.9}, 0.0,
            oracle=True)
    (root / "multirun.yaml").write_text(textwrap.dedent("""\
        hydra:
          sweeper:
            params: {method: 'none,ga,stamp', task: 'harmful,pii', seed: '0,1'}
          overrides:
            task: [patient=tiny]
        method: {name: ga}
        task: {name: pii}
        seed: 0
        group: table2
        """))  # stamp on pii (seeds 0 and 1) never started
    return root


EXPECTED_MARKDOWN = """\
| method   |   harmful Acc_f ↓ |   harmful Acc_r ↑ |   harmful PPL ↓ |   harmful Time (s) ↓ |        pii F-RL ↓ |        pii R-RL ↑ |       pii PPL ↓ |   pii Time (s) ↓ |
|:---------|------------------:|------------------:|----------------:|---------------------:|------------------:|------------------:|----------------:|-----------------:|
| Base     |      81.00 ± 1.41 |      79.00 ± 1.41 |     6.10 ± 0.14 |          0.00 ± 0.00 |     0.910 ± 0.014 |     0.890 ± 0.014 |     6.10 ± 0.14 |      0.00 ± 0.00 |
| Oracle   |       — (missing) |       — (missing) |     — (missing) |          — (missing) |             0.300 |             0.910 |            5.90 |             0.00 |
| GA       |       5.00 ± 7.07 |      71.00 ± 1.41 |     7.20 ± 0.28 |         11.00 ± 1.41 | **0.150 ± 0.071** | **0.750 ± 0.071** | **7.20 ± 0.14** | **21.00 ± 1.41** |
| STAMP    |    **0.00** (1/2) |   **75.00** (1/2) |  **6.50** (1/2) |       **2.00** (1/2) |       — (missing) |       — (missing) |     — (missing) |      — (missing) |"""

EXPECTED_LATEX = r"""\begin{tabular}{lrrrrrrrr}
\toprule
 & \multicolumn{4}{c}{harmful} & \multicolumn{4}{c}{pii} \\
method & Acc$_f$ $\downarrow$ & Acc$_r$ $\uparrow$ & PPL $\downarrow$ & Time (s) $\downarrow$ & F-RL $\downarrow$ & R-RL $\uparrow$ & PPL $\downarrow$ & Time (s) $\downarrow$ \\
\midrule
Base & 81.00 $\pm$ 1.41 & 79.00 $\pm$ 1.41 & 6.10 $\pm$ 0.14 & 0.00 $\pm$ 0.00 & 0.910 $\pm$ 0.014 & 0.890 $\pm$ 0.014 & 6.10 $\pm$ 0.14 & 0.00 $\pm$ 0.00 \\
Oracle & -- (missing) & -- (missing) & -- (missing) & -- (missing) & 0.300 & 0.910 & 5.90 & 0.00 \\
GA & 5.00 $\pm$ 7.07 & 71.00 $\pm$ 1.41 & 7.20 $\pm$ 0.28 & 11.00 $\pm$ 1.41 & \textbf{0.150 $\pm$ 0.071} & \textbf{0.750 $\pm$ 0.071} & \textbf{7.20 $\pm$ 0.14} & \textbf{21.00 $\pm$ 1.41} \\
STAMP & \textbf{0.00} (1/2) & \textbf{75.00} (1/2) & \textbf{6.50} (1/2) & \textbf{2.00} (1/2) & -- (missing) & -- (missing) & -- (missing) & -- (missing) \\
\bottomrule
\end{tabular}
"""


def test_table_writer_on_hand_made_folder(hand_made, tmp_path, caplog, monkeypatch):
    runs = load_runs(hand_made)
    assert sorted(runs["status"].value_counts().items()) == [("failed", 1), ("missing", 2), ("ok", 10)]
    out = tmp_path / "tables"
    monkeypatch.setenv("WANDB_MODE", "offline")
    tables.main([str(hand_made), "--out", str(out)])
    markdown = (out / "table2.md").read_text()
    assert EXPECTED_MARKDOWN in markdown
    assert (out / "table2.tex").read_text() == EXPECTED_LATEX
    # gaps are never dropped silently: each one is named in the file and in a warning
    for gap in ("failed: STAMP on harmful seed 1", "missing: STAMP on pii seed 0", "missing: STAMP on pii seed 1"):
        assert gap in markdown and gap in caplog.text
    csv = (out / "table2.csv").read_text().splitlines()
    assert csv[0] == "method,task,metric,mean,std,n_ok,n_failed,n_missing,n_runs,best"
    assert "STAMP,harmful,acc_f,0.0,,1,1,0,2,True" in csv
    assert list(hand_made.glob("wandb/offline-run-*/run-*.wandb"))  # the table went to W&B (offline), beside the runs


def test_a_new_metric_is_one_function_and_one_registration(hand_made, tmp_path, monkeypatch, make_cfg):
    """Registered once, a metric of the scored answers is computed by the evaluator and becomes a column of every
    task's table, with its label, digits and direction (fewest words best)."""
    monkeypatch.setattr(METRICS, "_items", dict(METRICS._items))  # the registration ends with the test
    monkeypatch.setattr(METRICS, "_labels", dict(METRICS._labels))

    def answer_words(rows):
        return sum(len(r["generation"].split()) for r in rows) / max(len(rows), 1)

    register_metric(Metric("f_words", split="forget", lower_is_better=True, unit="", label="F-words",
                           latex="F-words", digits=1, brief_digits=1, rows="forget", aggregate=answer_words))

    monkeypatch.setattr(evaluation, "generate", lambda patient, questions, *args, **kw: ["I do not know."] * len(questions))
    cfg = make_cfg("eval.ppl=false", "eval.paraphrases=false")
    metrics, _ = evaluation.evaluate(None, build_task(cfg.task, seed=0), cfg.eval)
    assert metrics["f_words"] == 4.0 and list(metrics)[:3] == ["f_rl", "f_fact", "f_words"]  # the forget rows' metrics

    for path in hand_made.rglob("results.json"):  # runs that report it
        res = json.loads(path.read_text())
        res["metrics"]["after"]["f_words"] = {"none": 9.0, "ga": 3.0, "stamp": 5.0}[res["method"]] + res["seed"]
        path.write_text(json.dumps(res))
    result = tables.write_tables(hand_made, tmp_path / "tables")
    header, _, *rows = result["markdown"].splitlines()
    columns, cells = header.split("|")[1:-1], {r.split("|")[1].strip(): r.split("|")[1:-1] for r in rows}
    assert [c.strip() for c in columns[1:6]] == ["harmful Acc_f ↓", "harmful Acc_r ↑", "harmful PPL ↓",
                                                 "harmful Time (s) ↓", "harmful F-words ↓"]
    assert columns[-1].strip() == "pii F-words ↓" and r"F-words $\downarrow$" in result["latex"]
    assert cells["GA"][5].strip() == cells["GA"][-1].strip() == "**3.5 ± 0.7**"  # one decimal; fewest words best
    assert cells["Base"][5].strip() == "9.5 ± 0.7" and cells["STAMP"][5].strip() == "5.0 (1/2)"
    assert "GA,harmful,f_words,3.5," in (tmp_path / "tables" / "table2.csv").read_text()


def test_sweep_grid_follows_command_line_overrides(tmp_path):
    """A single value on the command line replaces the recipe's list; a list replaces it too (as Hydra does)."""
    (tmp_path / "multirun.yaml").write_text(textwrap.dedent("""\
        hydra:
          sweeper:
            params: {method: 'none,ga,stamp', task: 'harmful,pii', seed: '0,1,2'}
          overrides:
            task: [patient=tiny, task=pii, 'seed=0,1', 'method.rank=16,64']
        """))
    _, jobs = sweep_grid(tmp_path / "multirun.yaml")
    assert jobs[:2] == [{"method": "none", "seed": "0", "method.rank": "16"},
                        {"method": "none", "seed": "0", "method.rank": "64"}]
    assert len(jobs) == 3 * 2 * 2 and all("task" not in j for j in jobs)


def test_table_rows_per_ablation_value(tmp_path):
    root = tmp_path / "rank"
    for rank, (f, r) in {16: (0.4, 0.5), 64: (0.1, 0.8), 256: (0.0, 0.85)}.items():
        _result(root, f"r{rank}", "stamp_lowrank", "pii", 0, {"f_rl": f, "r_rl": r, "ppl": 6.0}, rank / 64,
                method_cfg={"rank": rank})
    result = tables.write_tables(root, tmp_path / "out", name="ablation_rank", by=["method.rank"])
    lines = result["markdown"].splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:3]] == ["method", "method.rank"]
    assert [line.split("|")[2].strip() for line in lines[2:]] == ["16", "64", "256"]
    assert "**0.000**" in lines[4] and "**0.25**" in lines[2]  # best forget at r=256, fastest at r=16
    with pytest.raises(ValueError, match=r"--by 'method.nope' is not a config key"):
        tables.write_tables(root, tmp_path / "out", by=["method.nope"])


def test_plots_write_png_and_pdf(hand_made, tmp_path):
    for rank, (f, r) in {16: (0.4, 0.5), 64: (0.1, 0.8)}.items():
        _result(hand_made, f"lr_r{rank}", "stamp_lowrank", "pii", 0, {"f_rl": f, "r_rl": r, "ppl": 6.0}, 1.0,
                method_cfg={"rank": rank})
    written = plots.write_plots(hand_made, tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == ["ablation_rank.pdf", "ablation_rank.png", "runtime.pdf", "runtime.png", "tradeoff.pdf",
                     "tradeoff.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert (tmp_path / "plots" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------------------ launchers
def _multirun(sweep: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "run.py", "-m", *TINY, f"cache_dir={cache}", "eval.paraphrases=false",
           "eval.max_new_tokens=16", "threads=1", f"hydra.sweep.dir={sweep}", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})


def _check_grid(sweep: Path, proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = sorted(sweep.glob("*/results.json"))
    results = [json.loads(p.read_text()) for p in found]
    assert sorted((r["method"], r["seed"]) for r in results) == [("ga", 0), ("ga", 1), ("none", 0), ("none", 1)]
    table = tables.write_tables(sweep, sweep / "tables")
    assert (table["runs"]["status"] == "ok").all() and len(table["runs"]) == 4
    assert [line.split("|")[1].strip() for line in table["markdown"].splitlines()[2:]] == ["Base", "GA"]
    assert "missing" not in table["markdown"] and " ± " in table["markdown"]  # two seeds per cell
    return results


def test_multirun_basic_launcher_and_resume(cache_dir, tmp_path):
    sweep = tmp_path / "basic"
    _check_grid(sweep, _multirun(sweep, cache_dir, "method=none,ga", "seed=0,1"))
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/results.json")}
    again = _multirun(sweep, cache_dir, "method=none,ga", "seed=0,1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("already holds complete results of this config; skipping") == 4
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/results.json")} == stamps


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local", "submitit_slurm", "ray"])
def test_launchers_compose(launcher):
    if launcher == "ray":
        pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the [ray] extra is not installed")
    cfg = _compose("table2", [f"hydra/launcher={launcher}"])
    assert launcher.split("_")[0] in cfg.hydra.launcher._target_.lower()


def test_multirun_joblib_shares_the_implant_cache(cache_dir, tmp_path):
    """Two parallel jobs per seed start on an empty implant cache: each patient is implanted exactly once."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "patients").symlink_to(cache_dir / "patients")  # the converted base patient; implants start empty
    sweep = tmp_path / "joblib"
    # seed first: jobs 0 and 1 (seed 0) run at the same time, then jobs 2 and 3 (seed 1)
    results = _check_grid(sweep, _multirun(sweep, cache, "seed=0,1", "method=none,ga", "hydra/launcher=joblib",
                                           "hydra.launcher.n_jobs=2"))
    for seed in (0, 1):
        reports = [r["implant"] for r in results if r["seed"] == seed]
        assert sorted(r["cached"] for r in reports) == [False, True]  # one job trained, the other loaded it
        assert reports[0]["key"] == reports[1]["key"]
    assert len(list((cache / "implants").glob("*/COMPLETE"))) == 2
    assert not list((cache / "implants").glob(".*.tmp"))


def test_multirun_submitit_local_launcher(cache_dir, tmp_path):
    sweep = tmp_path / "submitit"
    _check_grid(sweep, _multirun(sweep, cache_dir, "method=none,ga", "seed=0,1", "hydra/launcher=submitit_local"))
    assert list(sweep.glob(".submitit/*/*_log.out"))  # each job ran as its own submitit process


# ------------------------------------------------------------------------------------------------ cache, resume
BUILDER = """
import sys, time
from pathlib import Path
from repair.io import cached_dir
target, go, counter = map(Path, sys.argv[1:4])
while not go.exists():
    time.sleep(0.01)
def build(tmp):
    with counter.open("a") as f:
        f.write("built\\n")
    time.sleep(1.0)
    (tmp / "weights").write_text("w")
print(cached_dir(target, build))
"""


def test_cache_entry_is_built_once_by_concurrent_processes(tmp_path):
    target, go, counter = tmp_path / "cache" / "entry", tmp_path / "go", tmp_path / "builds"
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(target), str(go), str(counter)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1.0)  # both are waiting for the start signal
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert counter.read_text() == "built\n"  # the second process waited on the lock and found the entry
    assert (target / "COMPLETE").exists() and (target / "weights").read_text() == "w"
    assert not list(target.parent.glob(".*.tmp"))


def test_failed_build_leaves_no_cache_entry(tmp_path):
    target = tmp_path / "entry"

    def broken(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        cached_dir(target, broken)
    assert not target.exists() and not list(tmp_path.glob(".*.tmp"))
    assert cached_dir(target, lambda tmp: (tmp / "ok").write_text("y")) == target and (target / "ok").exists()


def test_resume_skips_only_complete_results_of_the_same_config(make_cfg, tmp_path, caplog):
    cfg = make_cfg("method=none")
    assert completed_results(tmp_path, cfg) is None  # nothing there
    config = OmegaConf.to_container(cfg, resolve=True)
    full = {"method": "none", "task": "pii", "patient": "tiny", "seed": 0, "runtime_s": {},
            "metrics": {"before": {}, "after": {}}, "config": config}
    (tmp_path / "results.json").write_text(json.dumps(full | {"config": config | {"cache_dir": "/elsewhere"}}))
    assert completed_results(tmp_path, cfg) is not None  # where the cache lives does not matter
    (tmp_path / "results.json").write_text(json.dumps(full | {"config": config | {"seed": 1}}))
    assert completed_results(tmp_path, cfg) is None and "another config (seed differ)" in caplog.text
    (tmp_path / "results.json").write_text(json.dumps({k: v for k, v in full.items() if k != "metrics"}))
    assert completed_results(tmp_path, cfg) is None and "incomplete (no metrics" in caplog.text
    (tmp_path / "results.json").write_text("{half")
    assert completed_results(tmp_path, cfg) is None and "unreadable" in caplog.text


# ------------------------------------------------------------------------------------------------ task options
def test_forget_limit_requests_one_item_on_the_same_implant(make_cfg):
    full = build_task(make_cfg().task, seed=0)
    one = build_task(make_cfg("task.forget_limit=1").task, seed=0)
    assert len(full.forget) == 2 and one.forget == full.forget[:1] and one.forget_unrequested == full.forget[1:]
    assert one.fingerprint() == full.fingerprint() and one.teach() == full.teach()  # same implant, same cache entry
    assert one.retain == full.retain and one.retain_buffer == full.retain_buffer
    with pytest.raises(ValueError, match=r"task.forget_limit=3 but task 'pii' has only 2 forget items; valid: 1..2"):
        build_task(make_cfg("task.forget_limit=3").task, seed=0)
    with pytest.raises(ValueError, match=r"task.forget_limit = 0 is invalid; valid: an integer >= 1, or null"):
        build_task(make_cfg("task.forget_limit=0").task, seed=0)


def test_retain_buffer_ratio_spans_none_to_all(make_cfg):
    assert build_task(make_cfg("task.retain_buffer_ratio=0").task, seed=0).retain_buffer == []
    every = build_task(make_cfg("task.retain_buffer_ratio=1.0").task, seed=0)
    assert every.retain_buffer == every.retain
    with pytest.raises(ValueError, match=r"task.retain_buffer_ratio = 1.5 is invalid; valid: a share in \[0, 1\]"):
        build_task(make_cfg("task.retain_buffer_ratio=1.5").task, seed=0)


def test_split_requests_by_subject(make_cfg):
    task = build_task(make_cfg("task.forget_ratio=0.5").task, seed=0)  # 3 subjects × 2 attributes
    requests = split_requests(task.forget, 2)
    assert [len(r) for r in requests] == [4, 2] and sum(requests, []) == task.forget
    assert not {q.subject for q in requests[0]} & {q.subject for q in requests[1]}
    with pytest.raises(ValueError, match=r"sequential.steps=4 but the forget set has only 3 subjects; valid: 1..3"):
        split_requests(task.forget, 4)


def test_sequential_run_records_each_request(make_cfg, tmp_path):
    cfg = make_cfg("method=ga", "method.lr=1e-3", "task.forget_ratio=0.34", "sequential.steps=2",
                   "eval.paraphrases=false", "eval.max_new_tokens=16", "threads=1")
    with pytest.raises(ValueError, match="sequential.steps=3 but the forget set has only 2 subjects"):
        run(make_cfg("task.forget_ratio=0.34", "sequential.steps=3"), tmp_path)  # fails before loading anything
    threads = torch.get_num_threads()
    try:
        res = run(cfg, tmp_path)
    finally:
        torch.set_num_threads(threads)
    seq = res["sequence"]
    assert [s["request"] for s in seq] == [1, 2] and [s["requested_so_far"] for s in seq] == [2, 4]
    assert all({"f_rl", "r_rl", "ppl"} <= set(s["metrics"]) and s["report"]["steps"] >= 1 for s in seq)
    assert res["runtime_s"]["unlearn"] == pytest.approx(sum(s["unlearn_s"] for s in seq))
    assert seq[-1]["metrics"]["f_rl"] == pytest.approx(res["metrics"]["after"]["f_rl"])  # the last step sees it all
    assert json.loads((tmp_path / "results.json").read_text())["sequence"][0]["subjects"] == seq[0]["subjects"]
