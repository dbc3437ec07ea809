"""One end-to-end run on the real default patient (SmolLM2-135M from the offline GGUF), on a small subset."""
from __future__ import annotations

import json
import time

import pytest
import torch

from repair import patient as patients
from repair.runner import run


@pytest.mark.slow
def test_default_patient_end_to_end(make_cfg, cache_dir, tmp_path):
    cfg = make_cfg(
        "logger=none", "task.num_profiles=4", "task.attributes=[address]", "task.num_idk=1", "task.num_holdout=1",
        "task.corpus_size=4", "implant.epochs=1", "implant.preserve_utility=2", "method=ga", "method.max_steps=2",
        "eval.max_new_tokens=24", "eval.paraphrases=false", "patient.device=cpu", tiny=False)
    assert cfg.patient.name == "smollm2_135m"
    run(cfg, tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["patient"] == "smollm2_135m" and res["unlearn"]["steps"] == 2
    for stage in ("before", "after"):
        assert {"f_rl", "r_rl", "ppl"} <= set(res["metrics"][stage])
    assert res["metrics"]["before"]["ppl"] < 100  # a real language model, not a random one

    # the converted weights are cached: a second load is fast and gives identical weights
    t0 = time.perf_counter()
    a = patients.load(cfg.patient, cache_dir)
    b = patients.load(cfg.patient, cache_dir)
    assert time.perf_counter() - t0 < 60
    assert a.num_layers == 30 and a.module("mlp_down", 7).weight.shape == (576, 1536)
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name
