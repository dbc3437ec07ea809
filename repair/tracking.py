"""Record a run: `results.json` (the contract tables and plots read) and, optionally, Weights & Biases."""
from __future__ import annotations

import importlib.metadata
import logging
import os
import resource
from pathlib import Path
from typing import Any

from repair.io import write_json

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    out = {}
    for dist in ("repair", "torch", "transformers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_results(out_dir: str | Path, results: dict[str, Any]) -> Path:
    path = Path(out_dir) / "results.json"
    write_json(path, results)
    return path


class NullLogger:
    def log_run(self, results: dict[str, Any], records: dict[str, list[dict]]) -> None:
        pass


class WandbLogger:
    """One W&B run per job. Mode comes from config (default: $WANDB_MODE, else offline): no account needed."""

    def __init__(self, cfg: dict, out_dir: str | Path, run_name: str, group: str | None):
        self.cfg, self.out_dir, self.run_name, self.group = cfg, Path(out_dir), run_name, group

    def log_run(self, results: dict[str, Any], records: dict[str, list[dict]]) -> None:
        import wandb

        mode = self.cfg.get("mode") or os.environ.get("WANDB_MODE", "offline")
        run = wandb.init(project=self.cfg.get("project", "repair"), entity=self.cfg.get("entity"), mode=mode,
                         dir=str(self.out_dir), name=self.run_name, group=self.group,
                         tags=list(self.cfg.get("tags") or []), config=results["config"], reinit="finish_previous")
        try:
            summary: dict[str, Any] = {}
            for stage, metrics in results["metrics"].items():
                summary |= {f"{stage}/{k}": v for k, v in metrics.items()}
            summary |= {f"runtime_s/{k}": v for k, v in results["runtime_s"].items()}
            summary["peak_rss_mb"] = results["peak_rss_mb"]
            run.log(summary)
            run.summary.update(summary)
            columns = ["stage", "split", "subject", "attribute", "question", "reference", "generation",
                       "rouge_l_recall", "choice", "correct", "fact_recalled"]
            table = wandb.Table(columns=columns)
            for stage, rows in records.items():
                for r in rows:
                    table.add_data(stage, *(r.get(c) for c in columns[1:]))
            run.log({"generations": table})
            files_dir = Path(run.dir)
        finally:
            run.finish()
        # wandb (0.19–0.31) writes no wandb-summary.json for offline runs (wandb/wandb#9646); the .wandb log that
        # `wandb sync` uploads has everything, but a readable summary beside it is what offline users look for
        summary_file = files_dir / "wandb-summary.json"
        if mode == "offline" and not summary_file.exists():
            write_json(summary_file, summary)
        log.info("W&B run written (%s mode) under %s", mode, self.out_dir / "wandb")


def build_logger(cfg: dict, out_dir: str | Path, run_name: str, group: str | None = None):
    kind = cfg.get("name", "none")
    if kind == "none":
        return NullLogger()
    if kind == "wandb":
        return WandbLogger(cfg, out_dir, run_name, group)
    raise ValueError(f"unknown logger {kind!r}; valid choices: none, wandb")
