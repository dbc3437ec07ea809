"""The resource plan (`python -m repair.resources`, `run.py ++dry_run=true`): read from config files only, planned
for the configured device even where this machine lacks it, and an upper bound within reach of measured peaks."""
from __future__ import annotations

import pytest
import torch

from repair.resources import GB, plan, render

# Llama-3-8B-Instruct's config.json (meta-llama/Meta-Llama-3-8B-Instruct), no weights
LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
                 tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128009)


@pytest.fixture(scope="module")
def llama3_folder(tmp_path_factory):
    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("llama3_8b")
    LlamaConfig(**LLAMA3_8B).save_pretrained(folder)  # config.json only: planning must not need more
    return folder


def phases_of(make_cfg, *overrides):
    phases, info = plan(make_cfg(*overrides, tiny=False))
    return {p.name: p for p in phases}, info


def test_llama3_8b_on_a_gpu_this_machine_lacks(make_cfg, llama3_folder):
    """bf16 weights of 8.03 B parameters (15 GiB); the preset's LoRA + checkpointing implant fits one 80 GB GPU,
    full AdamW fine-tuning does not (it needs float32 masters and moments: 16 bytes per trained weight)."""
    base = ["patient=llama3_8b", f"patient.name_or_path={llama3_folder}", "method=npo"]
    phases, info = phases_of(make_cfg, *base)
    assert info["device"] == "cuda" and info["dtype"] == "bfloat16" and not torch.cuda.is_available()
    assert info["parameters"] == 8_030_261_248
    assert phases["load"].device_bytes / GB == pytest.approx(14.96, abs=0.01)
    assert phases["implant"].device_bytes < 80 * GB and phases["npo"].device_bytes < 80 * GB
    full, _ = phases_of(make_cfg, *base, "implant.lora_rank=0", "implant.gradient_checkpointing=false")
    assert full["implant"].device_bytes > 80 * GB
    assert full["implant"].device["float32 master weights"] == pytest.approx(4 * 6.98e9, rel=0.01)  # the blocks
    stamp, _ = phases_of(make_cfg, *base[:2], "method=stamp")  # keys, Grams and solves on the GPU in float32
    gram = 14336**2 * 4
    assert stamp["stamp"].device["held Grams (float32, m × m per edited layer)"] == 16 * gram
    assert stamp["stamp"].device_bytes < 40 * GB and stamp["stamp"].host_bytes < 3 * GB
    budget, _ = phases_of(make_cfg, *base[:2], "method=stamp", "method.gram_budget_gb=4")  # 4 layers' Grams fit
    assert budget["stamp"].device["held Grams (float32, m × m per edited layer)"] == 4 * gram
    assert budget["stamp"].host["held Grams past gram_budget_gb"] == 12 * gram
    low, _ = phases_of(make_cfg, *base[:2], "method=stamp_lowrank")  # no m × m system per request
    assert low["stamp_lowrank"].device_bytes < stamp["stamp"].device_bytes - gram
    assert "on CUDA" in render(*plan(make_cfg(*base, tiny=False)))


MEASURE = """
import json, sys
from baselines.memory import PeakMemory
from repair import patient as patients
from repair.methods import build_method
from repair.setup import compose
from repair.tasks import build_task

cfg = compose("config", sys.argv[1:])
patient = patients.load(cfg.patient, cfg.cache_dir)  # not implanted: what a step holds does not depend on it
float(sum(p.detach().sum() for p in patient.model.parameters()))  # the weights are read from the cache lazily (mmap):
# page them in, or the step's first forward pass counts them (~0.5 GB on the default patient)
task = build_task(cfg.task, seed=0)
method = build_method(cfg.method)
method.prepare(task)
with PeakMemory() as memory:
    method.unlearn(patient, task.forget, task.retain_buffer)
print(json.dumps(memory.report()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("method,overrides", [("ga", ["method.max_steps=3", "method.stop_forget_nll=null"]),
                                              ("stamp", [])])
def test_plan_bounds_the_measured_peak_of_an_unlearning_step(make_cfg, cache_dir, method, overrides):
    """On the default patient (pii), in a fresh process: what the unlearning step adds to resident memory,
    measured, against the plan's addition over the loaded weights. The plan is an upper bound (activations at
    max_length; batches pad only to their longest example) and must stay within 2× of the measurement."""
    import json
    import subprocess
    import sys

    args = [f"method={method}", "logger=none", f"cache_dir={cache_dir}", "threads=1", *overrides]
    done = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    measured = report["peak_rss_increase_mb"] * 2**20
    planned = {p.name: p for p in plan(make_cfg(*args, tiny=False))[0]}[method]
    added = planned.device_bytes + planned.host_bytes - planned.device["weights"]
    assert measured <= added <= 2 * measured, (measured / GB, added / GB)


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, cache_dir):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "run.py", "++dry_run=true", "patient=tiny", "method=stamp", "logger=none",
                           f"cache_dir={cache_dir}", f"hydra.run.dir={tmp_path}"], cwd=root, capture_output=True,
                          text=True, check=True)
    out = done.stdout + done.stderr
    assert "Resource plan: tiny (llama" in out and "stamp " in out, out[-2000:]
    assert not (tmp_path / "results.json").exists()


def test_gpu_check_says_what_to_install_where_there_is_no_cuda():
    """scripts/gpu_check.sh (run on the CPU with DEVICE=cpu while writing it: 5 min) stops at once, saying why."""
    import subprocess
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: run scripts/gpu_check.sh itself")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 2 and "CUDA is not available" in done.stderr and "CUDA build of torch" in done.stderr
