"""What every entry point does before its own work: compose the config, seed, set threads, load and implant the
patient. The runner (`run.py`), the chat (`repair.chat`) and the measurement scripts start here, so they start the
same way."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from repair import patient as patients
from repair.implant import implant
from repair.tasks import Task, build_task

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose(config: str = "config", overrides: Sequence[str] = (), config_dir: str | Path = CONF) -> DictConfig:
    """A config composed as Hydra composes it for `run.py` (`config`) or the chat (`chat`), with overrides."""
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: its search path is already set up
        return hydra_compose(config, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return hydra_compose(config, overrides=list(overrides))


def method_config(name: str, seed: int, overrides: Sequence[str] = (), config_dir: str | Path = CONF) -> DictConfig:
    """Method `name`'s settings from its own YAML (conf/method/<name>.yaml), e.g. for a chat plan that picks a method
    other than the session's: every setting as the results tables measured it, none from a code default."""
    return compose("config", [f"method={name}", f"seed={seed}", *overrides], config_dir).method


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start(cfg: DictConfig) -> int:
    """Seed every generator and set torch's CPU threads (`threads`, null: torch's default); returns the seed."""
    seed = int(cfg.seed)
    seed_everything(seed)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    return seed


def implant_recipe(cfg: DictConfig) -> DictConfig:
    """The patient's implant recipe with the task's epoch scale applied: a task may need more passes than the
    patient's recipe gives (arbitrary multiple-choice associations do)."""
    return OmegaConf.merge(cfg.implant, {
        "epochs": max(1, round(cfg.implant.epochs * float(cfg.task.implant_epochs_scale)))})


def implanted_patient(cfg: DictConfig) -> tuple[patients.Patient, Task, dict]:
    """The patient after implant of cfg's task (from the cache when it is there), the task, and the implant's
    report: where a chat or a measurement script starts (the runner times loading and implant apart)."""
    task = build_task(cfg.task, int(cfg.seed))
    patient = patients.load(cfg.patient, cfg.cache_dir)
    report = implant(patient, task, implant_recipe(cfg), cfg.cache_dir)
    return patient, task, report
