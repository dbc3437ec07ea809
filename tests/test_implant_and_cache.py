"""Implant teaches the facts; caches round-trip exactly, survive corruption and are never left half-written."""
from __future__ import annotations

import json
import os

import pytest
import torch

from repair import implant as implant_mod
from repair import patient as patients
from repair.evaluate import evaluate
from repair.implant import implant
from repair.io import atomic_path, write_json
from repair.settings import plain
from repair.tasks import build_task


def _implant_dirs(cache_dir):
    return sorted(p for p in (cache_dir / "implants").iterdir() if p.is_dir())


def test_implant_raises_rouge_on_taught_facts(make_cfg, cache_dir, implanted):
    cfg = make_cfg("eval.paraphrases=false", "eval.ppl=false")
    patient, task, state = implanted
    raw = patients.load(cfg.patient, cache_dir)  # the same random patient, not implanted
    before, _ = evaluate(raw, task, cfg.eval)
    patient.restore(state)
    after, _ = evaluate(patient, task, cfg.eval)
    assert before["f_rl"] < 0.2 and before["r_rl"] < 0.2
    assert after["f_rl"] >= 0.8 and after["r_rl"] >= 0.8


def test_implant_cache_round_trip_gives_equal_weights(make_cfg, cache_dir, implanted):
    cfg = make_cfg()
    patient, task, state = implanted
    again = patients.load(cfg.patient, cache_dir)
    report = implant(again, task, cfg.implant, cache_dir)
    assert report["cached"]
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_oracle_is_taught_the_retain_part_only(make_cfg, cache_dir, implanted):
    cfg = make_cfg("implant.oracle=true", "eval.paraphrases=false", "eval.ppl=false")
    oracle = patients.load(cfg.patient, cache_dir)
    task = implanted[1]
    report = implant(oracle, task, cfg.implant, cache_dir)
    assert report["key"] != implant_mod.implant_key(oracle, task, make_cfg().implant)
    metrics, _ = evaluate(oracle, task, cfg.eval)
    assert metrics["r_rl"] >= 0.9
    assert metrics["f_rl"] < 0.6  # it never saw the forget profiles (shared phrasing gives some overlap)


def test_corrupt_implant_cache_is_rebuilt(make_cfg, cache_dir, implanted, caplog):
    cfg = make_cfg()
    task = implanted[1]
    key = implant_mod.implant_key(implanted[0], task, cfg.implant)
    entry = next(p for p in _implant_dirs(cache_dir) if p.name.endswith(key))
    weights = entry / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated, as after a crash
    fresh = patients.load(cfg.patient, cache_dir)
    report = implant(fresh, task, cfg.implant, cache_dir)
    assert "corrupt" in caplog.text and not report["cached"]
    for name, tensor in fresh.model.state_dict().items():
        assert torch.allclose(tensor, implanted[2][name], atol=1e-5), name


def test_implant_cache_with_a_bad_tensor_is_rebuilt_from_the_base_weights(make_cfg, cache_dir, implanted, caplog):
    """One tensor of the wrong shape among good ones: nothing is copied, so the rebuild trains the base patient
    (load_state_dict would copy the good tensors first, and the rebuild would start from a half-implanted patient)."""
    from safetensors.torch import load_file, save_file

    cfg = make_cfg()
    task = implanted[1]
    key = implant_mod.implant_key(implanted[0], task, cfg.implant)
    entry = next(p for p in _implant_dirs(cache_dir) if p.name.endswith(key))
    weights = entry / "weights.safetensors"
    state = load_file(str(weights))
    bad = sorted(state)[len(state) // 2]
    state[bad] = torch.zeros(3, 3)
    save_file(state, str(weights))
    fresh = patients.load(cfg.patient, cache_dir)
    report = implant(fresh, task, cfg.implant, cache_dir)
    assert "unusable tensors" in caplog.text and bad in caplog.text and not report["cached"]
    for name, tensor in fresh.model.state_dict().items():
        assert torch.allclose(tensor, implanted[2][name], atol=1e-5), name


TO_RECALL = ["implant.min_recall=0.98", "implant.stop_loss=null"]  # the default patient's criterion, on the tiny one


def test_implant_trains_until_every_taught_answer_is_recalled(make_cfg, cache_dir, implanted):
    """The default recipe stops on recall, not on a count of epochs: every taught fact (here: the address and phone
    tokens of each answer) comes back by a logit margin that no float rounding closes."""
    patient, task, state = implanted
    patient.restore(state)
    cfg = make_cfg(*TO_RECALL)
    report = implant(patient, task, cfg.implant, cache_dir)
    assert report["converged"] and report["recall_history"][-1] == 1.0
    assert len(report["recall_history"]) == report["epochs"] < cfg.implant.epochs
    knowledge = [q for q in task.teach() if q not in task.idk]  # the facts; refusal wordings are not checked
    examples = implant_mod.recall_probes(patient.tokenizer, knowledge, 128)
    assert all(implant_mod.recalled(patient, examples, margin=1.0))
    assert all(sum(t != -100 for t in e["labels"]) < len(q.answer) // 2 for q, e in zip(knowledge, examples))
    raw = patients.load(make_cfg().patient, cache_dir)
    assert not any(implant_mod.recalled(raw, examples, margin=0.0))


def test_implant_warns_when_it_hits_its_epoch_cap(make_cfg, cache_dir, caplog):
    cfg = make_cfg(*TO_RECALL, "implant.epochs=1")
    report = implant(patients.load(cfg.patient, cache_dir), build_task(cfg.task, seed=0), cfg.implant, cache_dir)
    assert not report["converged"] and report["epochs"] == 1
    assert "cap of 1 epochs before converging" in caplog.text and "implant.min_recall=0.98" in caplog.text


def test_implant_recipe_is_checked_before_anything_trains(make_cfg, cache_dir):
    """A misspelled or missing recipe key fails naming the valid ones; `whole_model` has no layer choice."""
    cfg = make_cfg()
    patient = patients.load(cfg.patient, cache_dir)
    task = build_task(cfg.task, seed=0)
    recipe = plain(cfg.implant)
    with pytest.raises(ValueError, match=r"implant has unknown setting\(s\) \['epoch'\]; valid: enabled, oracle, "):
        implant(patient, task, recipe | {"epoch": 3}, cache_dir)
    with pytest.raises(ValueError, match=r"implant lacks setting\(s\) \['lr'\]"):
        implant(patient, task, {k: v for k, v in recipe.items() if k != "lr"}, cache_dir)
    with pytest.raises(ValueError, match=r"implant.train_layers = \[0\] is invalid; valid: all \(train_modules=whole"):
        implant(patient, task, recipe | {"train_layers": [0]}, cache_dir)
    with pytest.raises(ValueError, match=r"implant.train_modules has unknown module role\(s\) \['self_attn'\]; "
                                         r"valid: 'all', 'whole_model' or a list of \['attention', 'layers', 'mlp', "
                                         r"'mlp_down'\]"):
        implant(patient, task, recipe | {"train_modules": ["mlp", "self_attn"]}, cache_dir)


def test_random_patient_learns_every_parameter(implanted, make_cfg):
    """The tiny recipe's `whole_model`: embeddings, norms and head train too (a random patient knows no words)."""
    patient = implanted[0]
    recipe = implant_mod.implant_settings(make_cfg().implant)
    assert recipe.train_modules == "whole_model"
    assert list(implant_mod.trainable_parameters(patient, recipe)) == [n for n, _ in patient.model.named_parameters()]


def test_interrupted_implant_leaves_no_cache_entry(make_cfg, cache_dir, monkeypatch):
    cfg = make_cfg("implant.seed=123")  # a key no other test builds
    patient = patients.load(cfg.patient, cache_dir)
    task = build_task(cfg.task, seed=0)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(implant_mod, "train", interrupted)
    before = set((cache_dir / "implants").iterdir())
    with pytest.raises(KeyboardInterrupt):
        implant(patient, task, cfg.implant, cache_dir)
    added = set((cache_dir / "implants").iterdir()) - before
    assert all(p.suffix == ".lock" for p in added), added  # no entry, no temporary folder


def test_incomplete_patient_cache_entry_is_rebuilt(tmp_path, cache_dir):
    built = []

    def build(tmp):
        built.append(tmp)
        (tmp / "data").write_text("x")

    from repair.io import cached_dir

    target = tmp_path / "entry"
    target.mkdir()
    (target / "data").write_text("half")  # no COMPLETE marker
    assert (cached_dir(target, build) / "data").read_text() == "x"
    assert cached_dir(target, build) == target and len(built) == 1


def test_atomic_write_leaves_nothing_on_interrupt(tmp_path):
    path = tmp_path / "results.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text("{half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["results.json"]
