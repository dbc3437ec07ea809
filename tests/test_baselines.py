"""Training-based baselines (NPO, RMU, FLAT, WGA, ASU; GA for reference) on the implanted tiny patient: each loss
decreases its objective, each method lowers the forget metrics more than the retain ones, bad values fail clearly.
"""
from __future__ import annotations

import math

import pytest
import torch

from baselines import losses
from baselines.asu import attention_temperature
from baselines.trainer import lr_factor
from repair.data import answer_nll, collate, encode
from repair.evaluate import score_split
from repair.methods import build_method

# tiny-patient settings: its 2 layers learn from a high learning rate; RMU steers its last layer, ASU smooths harder
# (a 2-layer model recalls its facts with flat attention far better than SmolLM2 does)
TINY_METHODS = {
    "ga": ["method.lr=1e-3"],
    "npo": ["method.lr=1e-3"],
    "wga": ["method.lr=1e-3"],
    "flat": ["method.lr=1e-3"],
    "rmu": ["method.lr=3e-3", "method.layer=1", "method.retain_weight=1", "method.steering_relative=true",
            "method.steering_coef=4"],
    "asu": ["method.lr=1e-3", "method.temperature=10"],
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


def build(make_cfg, name: str, *overrides: str):
    return build_method(make_cfg(f"method={name}", *TINY_METHODS[name], *overrides).method)


def mean_nll(patient, items) -> float:
    batch = collate(encode(patient.tokenizer, items), patient.tokenizer.pad_token_id, patient.device)
    with torch.no_grad():
        return answer_nll(patient.model, batch).mean().item()


@pytest.mark.parametrize("name", list(TINY_METHODS))
def test_baseline_decreases_its_loss_and_forgets_more_than_it_retains(make_cfg, fresh_patient, name):
    patient, task = fresh_patient
    method = build(make_cfg, name, "method.stop_forget_nll=null", "method.max_steps=30")
    forget_before, retain_before = mean_nll(patient, task.forget), mean_nll(patient, task.retain)
    report = method.unlearn(patient, task.forget, task.retain_buffer)
    history = report["history"]
    assert history[4]["loss"] < history[0]["loss"], history[:5]  # the objective falls within a few steps
    forget_rise = mean_nll(patient, task.forget) - forget_before
    retain_rise = mean_nll(patient, task.retain) - retain_before
    assert forget_rise > 0.2 and forget_rise > retain_rise, (forget_rise, retain_rise)
    assert report["steps"] == 30 and report["memory"]["peak_rss_mb"] > 0 and report["train_seconds"] > 0
    assert not any(p.requires_grad for p in patient.model.parameters())  # the patient is left frozen


@pytest.mark.parametrize("name", ["npo", "flat", "rmu"])
def test_baseline_lowers_generated_forget_answers(make_cfg, fresh_patient, name):
    patient, task = fresh_patient
    eval_cfg = make_cfg().eval

    def rouge(items):
        rows = score_split(patient, items, "forget", eval_cfg)
        return sum(r["rouge_l_recall"] for r in rows) / len(rows)

    before = rouge(task.forget)
    build(make_cfg, name).unlearn(patient, task.forget, task.retain_buffer)
    after = rouge(task.forget)
    assert before >= 0.9 and after <= before - 0.4, (before, after)


def test_npo_reference_is_cached_not_a_second_model(make_cfg, fresh_patient):
    patient, task = fresh_patient
    method = build(make_cfg, "npo", "method.retain_weight=0", "method.max_steps=2", "method.beta=0.5")
    report = method.unlearn(patient, task.forget, task.retain_buffer)
    # at the first step the patient is the reference: log(π/π_ref) = 0 and the loss is (2/β) log 2
    assert report["history"][0]["log_ratio"] == pytest.approx(0.0, abs=1e-4)
    assert report["history"][0]["loss"] == pytest.approx(2 / 0.5 * math.log(2), rel=1e-4)
    assert method.ref_logp.shape == (len(task.forget),)
    assert not any(isinstance(v, torch.nn.Module) for v in vars(method).values())


def test_rmu_trains_only_the_configured_mlp_weights(make_cfg, fresh_patient):
    patient, task = fresh_patient
    before = patient.snapshot()
    report = build(make_cfg, "rmu", "method.max_steps=3").unlearn(patient, task.forget, task.retain_buffer)
    changed = {k for k, v in patient.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    assert report["trained_parameters"] == 2 * 64 * 256
    assert report["control_norm"] == pytest.approx(4 * report["forget_activation_norm"])


def test_asu_teacher_is_the_patient_with_tempered_attention(make_cfg, fresh_patient):
    patient, task = fresh_patient
    scales = [patient.module("attention", i).scaling for i in range(2)]
    with attention_temperature(patient, [0, 1], 4.0):
        assert [patient.module("attention", i).scaling for i in range(2)] == [s / 4.0 for s in scales]
    assert [patient.module("attention", i).scaling for i in range(2)] == scales  # restored exactly
    # τ = 1: the teacher is the student, so the distillation loss starts at zero
    report = build(make_cfg, "asu", "method.temperature=1", "method.max_steps=1").unlearn(
        patient, task.forget, task.retain_buffer)
    assert report["history"][0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert report["teacher_mb"] > 0


@pytest.mark.parametrize("name", list(TINY_METHODS))
def test_negative_learning_rate_fails_at_construction(make_cfg, name):
    with pytest.raises(ValueError, match=r"method.lr must be > 0, got -0.001"):
        build(make_cfg, name, "method.lr=-1e-3")
    # the runner calls `method.prepare(task)` when a method has it; the baselines' own setup has other names
    assert not hasattr(build(make_cfg, name), "prepare")


@pytest.mark.parametrize("name,override,message", [
    ("npo", "method.beta=0", r"method.beta must be > 0, got 0"),
    ("wga", "method.beta=-1", r"method.beta must be > 0, got -1"),
    ("flat", "method.divergence=hellinger", r"unknown method.divergence 'hellinger'; valid choices: kl, js"),
    ("asu", "method.temperature=0.5", r"method.temperature must be >= 1"),
    ("rmu", "method.steering_coef=0", r"method.steering_coef must be > 0"),
    ("rmu", "method.layer=all", r"method.layer must be a layer index"),
    ("npo", "method.schedule=cosine", r"unknown method.schedule 'cosine'; valid choices: constant, linear"),
    ("ga", "method.warmup_ratio=1.5", r"method.warmup_ratio must be in \[0, 1\)"),
])
def test_bad_hyperparameters_fail_at_construction(make_cfg, name, override, message):
    with pytest.raises(ValueError, match=message):
        build(make_cfg, name, override)


@pytest.mark.parametrize("name,override,message", [
    ("rmu", "method.layer=5", r"method.layer has unknown layer\(s\) \[5\]; valid: 0..1"),
    ("npo", "method.train_layers=[0,7]", r"method.train_layers has unknown layer\(s\) \[7\]; valid: 0..1"),
    ("asu", "method.smooth_layers=[3]", r"method.smooth_layers has unknown layer\(s\) \[3\]"),
    ("wga", "method.train_modules=[mlp_up]", r"unknown module role\(s\) \['mlp_up'\]; valid: 'all' or \["),
])
def test_unknown_layers_and_modules_fail_before_training(make_cfg, fresh_patient, name, override, message):
    patient, task = fresh_patient
    before = patient.snapshot()
    with pytest.raises(ValueError, match=message):
        build(make_cfg, name, override).unlearn(patient, task.forget, task.retain_buffer)
    assert all(torch.equal(v, before[k]) for k, v in patient.model.state_dict().items())


def test_linear_schedule_warms_up_then_decays_to_zero():
    factors = [lr_factor(s, 10, 2, "linear") for s in range(10)]
    assert factors[0] < factors[1] < factors[2] == 1.0
    assert all(a > b for a, b in zip(factors[2:], factors[3:])) and factors[-1] == pytest.approx(1 / 8)
    assert [lr_factor(s, 10, 0, "constant") for s in range(10)] == [1.0] * 10


def test_losses_are_plain_functions_with_the_papers_shape():
    ref = torch.tensor([-5.0, -8.0])
    assert losses.npo_loss(ref, ref, 0.1).item() == pytest.approx(20 * math.log(2))
    assert losses.npo_loss(ref - 50, ref, 0.1) < losses.npo_loss(ref, ref, 0.1)  # pushing log π down lowers it
    low, high = torch.tensor([0.05]), torch.tensor([0.9])
    for div in losses.FLAT_DIVERGENCES:  # better when the template is likelier and the forget answer less likely
        assert losses.flat_loss(high, low, div) < losses.flat_loss(low, low, div) < losses.flat_loss(low, high, div)
    logp = torch.log(torch.tensor([0.9, 1e-4], requires_grad=True))
    logp.retain_grad()
    losses.wga_loss(logp, 1.0).backward()
    assert logp.grad[0] > 1000 * logp.grad[1] > 0  # forgotten tokens barely pull any more
    acts, mask = torch.ones(1, 3, 4), torch.tensor([[True, False, True]])
    assert losses.activation_mse(acts, torch.zeros(4), mask).item() == pytest.approx(1.0)
    batch = {"labels": torch.tensor([[-100, -100, 5, 6, -100]])}
    assert losses.answer_positions(batch).tolist() == [[False, True, True, True, False]]
