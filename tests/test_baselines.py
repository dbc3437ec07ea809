"""Training-based baselines (NPO, RMU, FLAT, WGA, ASU; GA for reference) on the implanted tiny patient: each loss
decreases its objective, each method lowers the forget metrics more than the retain ones, bad values fail clearly.
"""
from __future__ import annotations

import math
from typing import get_args, get_type_hints

import pytest
import torch

from baselines import losses
from baselines.asu import attention_temperature
from baselines.flat import FLATSettings
from repair.evaluate import score_split
from repair.implant import implant_settings, trainable_parameters
from repair.methods import MethodBase, build_method
from repair.training import lr_factor, select_parameters
from tests.conftest import mean_nll

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


@pytest.mark.parametrize("name", list(TINY_METHODS))
def test_baseline_decreases_its_loss_and_forgets_more_than_it_retains(make_cfg, fresh_patient, name):
    patient, task = fresh_patient
    method = build(make_cfg, name, "method.stop_forget_nll=null", "method.max_steps=30")
    forget_before, retain_before = mean_nll(patient, task.forget), mean_nll(patient, task.retain)
    report = method.unlearn(patient, task.forget, task.retain_buffer).report
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
    report = method.unlearn(patient, task.forget, task.retain_buffer).report
    # at the first step the patient is the reference: log(π/π_ref) = 0 and the loss is (2/β) log 2
    assert report["history"][0]["log_ratio"] == pytest.approx(0.0, abs=1e-4)
    assert report["history"][0]["loss"] == pytest.approx(2 / 0.5 * math.log(2), rel=1e-4)
    assert method.ref_logp.shape == (len(task.forget),)
    assert not any(isinstance(v, torch.nn.Module) for v in vars(method).values())


def test_rmu_trains_only_the_configured_mlp_weights(make_cfg, fresh_patient):
    patient, task = fresh_patient
    before = patient.snapshot()
    report = build(make_cfg, "rmu", "method.max_steps=3").unlearn(patient, task.forget, task.retain_buffer).report
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
        patient, task.forget, task.retain_buffer).report
    assert report["history"][0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert report["teacher_mb"] > 0


@pytest.mark.parametrize("name", list(TINY_METHODS))
def test_negative_learning_rate_fails_at_construction(make_cfg, name):
    with pytest.raises(ValueError, match=r"method.lr = -0.001 is invalid; valid: a number > 0"):
        build(make_cfg, name, "method.lr=-1e-3")
    assert isinstance(build(make_cfg, name), MethodBase)  # the protocol's task-level `prepare` is a no-op here


@pytest.mark.parametrize("name", list(TINY_METHODS))
def test_misspelled_setting_fails_naming_the_valid_ones(make_cfg, name):
    with pytest.raises(ValueError, match=r"method has unknown setting\(s\) \['lrr'\]; valid: name, lr, max_steps, "):
        build(make_cfg, name, "+method.lrr=1")
    with pytest.raises(ValueError, match=r"method lacks setting\(s\) \['max_steps'\]"):
        build(make_cfg, name, "~method.max_steps")


@pytest.mark.parametrize("name,override,message", [
    ("npo", "method.beta=0", r"method.beta = 0.0 is invalid; valid: a number > 0"),
    ("wga", "method.beta=-1", r"method.beta = -1.0 is invalid; valid: a number > 0"),
    ("flat", "method.divergence=hellinger", r"method.divergence = 'hellinger' is invalid; valid: kl, js, pearson, tv"),
    ("asu", "method.temperature=0.5", r"method.temperature = 0.5 is invalid; valid: a number >= 1"),
    ("rmu", "method.steering_coef=0", r"method.steering_coef = 0.0 is invalid; valid: a number > 0"),
    ("rmu", "method.layer=all", r"method.layer = 'all' is invalid; valid: an integer"),
    ("npo", "method.schedule=cosine", r"method.schedule = 'cosine' is invalid; valid: constant, linear"),
    ("ga", "method.warmup_ratio=1.5", r"method.warmup_ratio = 1.5 is invalid; valid: a share in \[0, 1\)"),
    ("ga", "method.train_layers=auto", r"method.train_layers = 'auto' is invalid; valid: all or a list"),
    ("ga", "method.grad_accum=0", r"method.grad_accum = 0 is invalid; valid: an integer >= 1"),
    ("npo", "method.train_modules=whole_model", None),  # valid: every parameter, embeddings too
    ("npo", "method.train_modules=mlp_down", r"method.train_modules = 'mlp_down' is invalid; valid: all, whole_model "
                                             r"or a list"),
])
def test_bad_hyperparameters_fail_at_construction(make_cfg, name, override, message):
    if message is None:
        build(make_cfg, name, override)
        return
    with pytest.raises(ValueError, match=message):
        build(make_cfg, name, override)


def test_flat_divergences_are_the_losses():
    assert set(get_args(get_type_hints(FLATSettings)["divergence"])) == set(losses.FLAT_DIVERGENCES)


@pytest.mark.parametrize("name,override,message", [
    ("rmu", "method.layer=5", r"method.layer has unknown layer\(s\) \[5\]; valid: 0..1"),
    ("npo", "method.train_layers=[0,7]", r"method.train_layers has unknown layer\(s\) \[7\]; valid: 0..1"),
    ("asu", "method.smooth_layers=[3]", r"method.smooth_layers has unknown layer\(s\) \[3\]"),
    ("wga", "method.train_modules=[mlp_up]",
     r"method.train_modules has unknown module role\(s\) \['mlp_up'\]; valid: 'all', 'whole_model' or a list of "
     r"\['attention', 'layers', 'mlp', "),
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


@pytest.mark.parametrize("layers,modules", [("all", "all"), ([1], ["mlp", "attention"]), ([0], ["mlp_down"]),
                                            ("all", "whole_model")])
def test_implant_and_baselines_train_the_same_weights_for_the_same_roles(make_cfg, fresh_patient, layers, modules):
    """One meaning of `train_layers` × `train_modules`: the implant's recipe and a baseline's settings select the same
    weights, in `named_parameters()` order; a GA step changes exactly those."""
    patient, task = fresh_patient
    recipe = implant_settings(make_cfg(f"implant.train_layers={layers}", f"implant.train_modules={modules}").implant)
    taught = trainable_parameters(patient, recipe)
    method = build(make_cfg, "ga", f"method.train_layers={layers}", f"method.train_modules={modules}",
                   "method.max_steps=1", "method.stop_forget_nll=null")
    assert list(taught) == list(select_parameters(patient, layers, modules, "method"))
    assert list(taught) == [n for n, _ in patient.model.named_parameters() if n in taught]
    before = {n: p.detach().clone() for n, p in patient.model.named_parameters()}
    report = method.unlearn(patient, task.forget, task.retain_buffer).report
    changed = [n for n, p in patient.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed == list(taught) and report["trained_parameters"] == sum(p.numel() for p in taught.values())
    embeddings = "model.embed_tokens.weight"
    assert (embeddings in taught) == (modules == "whole_model")  # 'all' is every weight of the layers, no more
    if modules == ["mlp", "attention"]:  # the roles are the blocks' sub-modules (layer norms stay frozen)
        assert {n.split(".")[3] for n in taught} == {"mlp", "self_attn"} and all(".1." in n for n in taught)
