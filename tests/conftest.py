"""Shared fixtures: a hermetic cache, Hydra composition, and one implanted tiny patient per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from repair import patient as patients
from repair.implant import implant
from repair.tasks import build_task

CONF = Path(__file__).resolve().parents[1] / "conf"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# small enough to implant in seconds, large enough to have forget, retain, buffer and holdout items
SMALL_PII = ["task.num_profiles=6", "task.attributes=[address,phone]", "task.num_idk=2", "task.num_holdout=2",
             "task.corpus_size=4"]
TINY = ["patient=tiny", "logger=none", *SMALL_PII]


def mean_nll(patient, items) -> float:
    """Mean answer NLL of `items` on the patient: what a forgetting (or retaining) test compares before and after."""
    import torch

    from repair.data import answer_nll, collate, encode

    batch = collate(encode(patient.tokenizer, items), patient.tokenizer.pad_token_id, patient.device)
    with torch.no_grad():
        return answer_nll(patient.model, batch).mean().item()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small tiny-patient steps: they run fastest that way, and on a shared 2-core
    machine two threads spin and cost several times the CPU time."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def make_cfg(cache_dir):
    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            other_task = any(o.startswith("task=") for o in overrides)
            base = [o for o in TINY if not (other_task and o in SMALL_PII)] if tiny else []
            return compose("config", overrides=[*base, f"cache_dir={cache_dir}", *overrides])

    return make


@pytest.fixture(scope="session")
def implanted(make_cfg, cache_dir):
    """(patient, task, pristine weights) of the tiny patient after implant; restore the weights after editing."""
    cfg = make_cfg()
    patient = patients.load(cfg.patient, cache_dir)
    task = build_task(cfg.task, seed=0)
    implant(patient, task, cfg.implant, cache_dir)
    return patient, task, patient.snapshot()


@pytest.fixture
def fresh_patient(implanted):
    patient, task, state = implanted
    patient.restore(state)
    yield patient, task
    patient.restore(state)
