"""Hydra entry point: `python run.py method=ga task=pii`, or a grid with `python run.py -m method=ga,none seed=0,1`."""
from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from repair.resume import completed_results
from repair.runner import run

log = logging.getLogger("run")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    if cfg.get("dry_run", False):  # the resource plan of this job, from config files only; nothing runs
        from repair.resources import plan, render

        log.info("dry run: nothing is loaded or trained\n%s", render(*plan(cfg)))
        return
    out_dir = HydraConfig.get().runtime.output_dir
    if cfg.get("resume", True) and completed_results(out_dir, cfg) is not None:
        log.info("resume: %s already holds complete results of this config; skipping (resume=false runs it again)",
                 out_dir)
        return
    run(cfg, out_dir)


if __name__ == "__main__":
    main()
