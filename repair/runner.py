"""One experiment, end to end: load → build task → implant → evaluate → unlearn → evaluate → record.

Each step is one call that passes a plain value on; the runner owns the order, the modules own their step.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repair import evaluate as evaluation
from repair import patient as patients
from repair.attacks import build_attacks, run_attacks
from repair import sequential
from repair.implant import implant
from repair.methods import build_method
from repair.setup import implant_recipe, seed_everything, start
from repair.tasks import build_task
from repair.tracking import build_logger, peak_rss_mb, versions, write_results

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run one experiment described by a composed config; write results.json into `out_dir` and return it."""
    out_dir = Path(out_dir)
    seed = start(cfg)
    # everything that can fail on a bad config is built before the slow steps
    patients.check_config(cfg.patient)  # source, device, dtype, where the hf model is: before any weights load
    evaluation.validate_eval(cfg.eval)
    method = build_method(cfg.method)
    task = build_task(cfg.task, seed)
    attacks = build_attacks(cfg.eval.get("attacks"))  # eval.attacks (repair/attacks/)
    sequential.plan(task, cfg)
    logger = build_logger(OmegaConf.to_container(cfg.logger, resolve=True), out_dir, run_name=str(cfg.run_name),
                          group=cfg.get("group"))
    runtime: dict[str, float] = {}

    t0 = time.perf_counter()
    patient = patients.load(cfg.patient, cfg.cache_dir)
    runtime["load"] = time.perf_counter() - t0
    log.info("task %s: %d forget, %d retain (%d in the buffer), %d holdout items", task.name, len(task.forget),
             len(task.retain), len(task.retain_buffer), len(task.holdout))

    t0 = time.perf_counter()
    implant_report = implant(patient, task, implant_recipe(cfg), cfg.cache_dir)
    runtime["implant"] = time.perf_counter() - t0
    log.info("implant: %s in %.1f s", "cache hit" if implant_report.get("cached") else "trained", runtime["implant"])

    t0 = time.perf_counter()
    before, before_records = evaluation.evaluate(patient, task, cfg.eval)
    runtime["eval_before"] = time.perf_counter() - t0
    log.info("before: %s", _fmt(before))

    seed_everything(seed)
    t0 = time.perf_counter()
    method.prepare(task)  # task-level references a method may use (e.g. STAMP's refused subjects)
    unlearned = sequential.unlearn(method, patient, task, cfg)  # one request, or sequential.steps in a row
    unlearn_report = unlearned.report
    unlearn_report.setdefault("phases", {})  # seconds per phase of the unlearning step (a method without any: {})
    runtime["unlearn"] = time.perf_counter() - t0
    if "sequence" in unlearn_report:  # unlearning time without the evaluations between requests
        runtime["unlearn"] = sum(step["unlearn_s"] for step in unlearn_report["sequence"])

    t0 = time.perf_counter()
    after, after_records = evaluation.evaluate(patient, task, cfg.eval)
    after |= evaluation.utility_benchmarks(patient, cfg.eval)
    runtime["eval_after"] = time.perf_counter() - t0
    runtime["eval"] = runtime["eval_before"] + runtime["eval_after"]
    log.info("after %s: %s (unlearning took %.1f s%s)", cfg.method.name, _fmt(after), runtime["unlearn"],
             "".join(f"; {k} {v:.2f} s" for k, v in sorted(unlearn_report["phases"].items(), key=lambda kv: -kv[1])))
    if attacks:  # try to bring the forgotten knowledge back; attacks leave the patient as they found it
        t0 = time.perf_counter()
        robustness = run_attacks(patient, task, method, attacks, cfg.eval, before, before_records, seed,
                                 patch=unlearned.patch)
        runtime["attacks"] = time.perf_counter() - t0

    results = {
        "method": cfg.method.name, "task": task.name, "patient": patient.name, "seed": seed,
        "metrics": {"before": before, "after": after},
        "protocol": evaluation.protocol(cfg.eval, task.scoring, task.forget),
        "runtime_s": runtime, "peak_rss_mb": peak_rss_mb(),
        "implant": implant_report, "unlearn": unlearn_report,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": versions(),
    }
    if "sequence" in unlearn_report:
        results["sequence"] = unlearn_report.pop("sequence")
    if attacks:
        results["robustness"] = robustness
    write_results(out_dir, results)
    logger.log_run(results, {"before": before_records, "after": after_records})
    log.info("results written to %s", out_dir / "results.json")
    return results


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3f}" for k, v in metrics.items())
