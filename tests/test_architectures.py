"""Any patient: every supported decoder family, as a tiny random model saved with `save_pretrained` and loaded with
`patient=hf` and no `patient.modules` overrides, is detected, checked at load time, implanted, and forgets under
STAMP, STAMP-LR, GA and RMU. Wrong paths fail at load time, naming what exists."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from repair import patient as patients
from repair.architectures import PRESETS, readout_gain
from repair.data import answer_logits, collate, encode
from repair.evaluate import score_split
from repair.implant import implant
from repair.methods import build_method
from repair.patches import Delta, Patch
from repair.stamp.method import EditFailed
from repair.tasks import QA, build_task
from repair.training import select_parameters
from tests.conftest import mean_nll

WIDTH, MLP, LAYERS, HEADS = 64, 256, 2, 4  # the `tiny` patient's shape


def configs(tokenizer) -> dict:
    """model_type → a config of the `tiny` patient's size, in each family's own keyword names."""
    import transformers as T

    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    common = dict(ids, hidden_size=WIDTH, intermediate_size=MLP, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=256)
    return {
        "llama": T.LlamaConfig(**common),
        "qwen2": T.Qwen2Config(**common),
        "qwen3": T.Qwen3Config(**common, head_dim=WIDTH // HEADS),
        "mistral": T.MistralConfig(**common),
        "phi3": T.Phi3Config(**common),
        "gemma2": T.Gemma2Config(**common, head_dim=WIDTH // HEADS),
        "gemma3_text": T.Gemma3TextConfig(**common, head_dim=WIDTH // HEADS),
        "gpt2": T.GPT2Config(**ids, n_embd=WIDTH, n_inner=MLP, n_layer=LAYERS, n_head=HEADS, n_positions=256),
        "gpt_neox": T.GPTNeoXConfig(**ids, hidden_size=WIDTH, intermediate_size=MLP, num_hidden_layers=LAYERS,
                                    num_attention_heads=HEADS, max_position_embeddings=256),
        "opt": T.OPTConfig(**ids, hidden_size=WIDTH, ffn_dim=MLP, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                           max_position_embeddings=256, word_embed_proj_dim=WIDTH),
    }


def save_tiny(model_type: str, tokenizer, folder: Path, seed: int = 0) -> Path:
    """A random model of `model_type` and the tokenizer, saved to `folder` (what `patient=hf` loads)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(configs(tokenizer)[model_type])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# the issue's nine families (Qwen3 shares Qwen2's layout and is checked at load time below)
FAMILIES = ["llama", "qwen2", "mistral", "phi3", "gemma2", "gemma3_text", "gpt2", "gpt_neox", "opt"]
PRESET_OF = {"gemma2": "gemma", "gemma3_text": "gemma", "gpt2": "gpt2", "gpt_neox": "gpt_neox", "opt": "opt"}
METHODS = {  # the tiny-patient settings of tests/test_stamp.py and tests/test_baselines.py
    "stamp": ["method.strength=3.0", "method.contrast_prompts=48"],
    "stamp_lowrank": ["method.strength=3.0", "method.contrast_prompts=48", "method.rank=128"],
    "ga": ["method.lr=1e-3", "method.stop_forget_nll=3"],
    "rmu": ["method.lr=3e-3", "method.layer=1", "method.retain_weight=1", "method.steering_relative=true",
            "method.steering_coef=4", "method.stop_forget_nll=3"],
}

# the tiny implant recipe (lr 1e-2) does not teach Gemma its facts (measured: forget ROUGE-L recall 0.36 after 40
# epochs; its embeddings are scaled by √d); a third of it, twice as long, does
IMPLANT = {"gemma2": ["implant.lr=3e-3", "implant.epochs=80"], "gemma3_text": ["implant.lr=3e-3", "implant.epochs=80"]}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(make_cfg, cache_dir):
    return patients.load(make_cfg().patient, cache_dir).tokenizer


@pytest.fixture(scope="module")
def folders(tokenizer, tmp_path_factory):
    """model_type → a folder holding a tiny random model of it and the default patient's tokenizer."""
    root = tmp_path_factory.mktemp("families")
    return {t: save_tiny(t, tokenizer, root / t) for t in configs(tokenizer)}


def hf(make_cfg, folder, *overrides):
    return make_cfg("patient=hf", f"patient.name_or_path={folder}", "patient.device=cpu", "patient.dtype=float32",
                    "implant=tiny", *overrides)


@pytest.mark.parametrize("model_type", [*FAMILIES, "qwen3"])
def test_every_family_is_detected_and_its_roles_cover_the_blocks(make_cfg, cache_dir, folders, model_type):
    """No overrides: the preset is found from config.model_type, and `train_modules: [mlp, attention]` trains
    every block weight but the norms (what the default hf implant recipe means on every family)."""
    patient = patients.load(hf(make_cfg, folders[model_type]).patient, cache_dir)
    assert patient.arch.name == PRESET_OF.get(model_type, "llama")
    chosen = select_parameters(patient, "all", ["mlp", "attention"], "implant")
    blocks = {n for n, _ in patient.model.named_parameters() if n.startswith(patient.layer_prefix(0)[:-2])}
    norms = {n for n in blocks if n.split(".")[-3].isdigit() and ("norm" in n or ".ln_" in n)}  # on the block
    assert set(chosen) == blocks - norms, sorted((blocks - norms) ^ set(chosen))
    assert select_parameters(patient, "all", ["mlp_down"], "implant")  # one projection per layer


@pytest.mark.slow
@pytest.mark.parametrize("model_type", FAMILIES)
def test_implant_then_every_method_forgets(make_cfg, cache_dir, folders, model_type):
    """The end-to-end path a user takes with their own model: implant, then each method from the implanted
    weights. STAMP and STAMP-LR: the forget answers lose their facts (ROUGE-L recall, the F-RL of results.json)
    and most retain answers keep theirs. GA and RMU: the forget answers' NLL rises, by more than the retain ones'."""
    cfg = hf(make_cfg, folders[model_type], *IMPLANT.get(model_type, []))
    patient = patients.load(cfg.patient, cache_dir)
    task = build_task(cfg.task, seed=0)
    implant(patient, task, cfg.implant, cache_dir)
    taught = patient.snapshot()

    def rouge(items, split):
        rows = score_split(patient, items, split, cfg.eval)
        return sum(r["rouge_l_recall"] for r in rows) / len(rows)

    assert rouge(task.forget, "forget") >= 0.9 and rouge(task.retain, "retain") >= 0.9  # it learned its facts
    nll_f, nll_r = mean_nll(patient, task.forget), mean_nll(patient, task.retain)
    for name, overrides in METHODS.items():
        patient.restore(taught)
        method = build_method(hf(make_cfg, folders[model_type], f"method={name}", *overrides).method)
        method.prepare(task)
        method.unlearn(patient, task.forget, task.retain_buffer)
        forget, retain = rouge(task.forget, "forget"), rouge(task.retain, "retain")
        rise_f, rise_r = mean_nll(patient, task.forget) - nll_f, mean_nll(patient, task.retain) - nll_r
        if name.startswith("stamp"):
            assert forget <= 0.6 and retain >= 0.6, (name, forget, retain)
        else:
            assert rise_f > 1.0 and rise_f > rise_r, (name, rise_f, rise_r)


def test_a_wrong_path_fails_at_load_naming_what_exists(make_cfg, cache_dir, folders):
    cfg = hf(make_cfg, folders["gpt2"], "patient.modules.mlp_down='transformer.h.{}.mlp.down_proj'")
    with pytest.raises(ValueError, match=r"mlp_down=.*your override.*transformer.h.0.mlp has no 'down_proj' \(it "
                                         r"has: c_fc, c_proj, act, dropout\)"):
        patients.load(cfg.patient, cache_dir)
    with pytest.raises(ValueError, match=r"needs exactly one \{\} for the layer index"):
        patients.load(hf(make_cfg, folders["gpt2"], "patient.modules.mlp_down=transformer.h.0.mlp.c_fc").patient,
                      cache_dir)
    with pytest.raises(ValueError, match=r"maps to width 256 at layer 0, not the residual width 64"):
        patients.load(hf(make_cfg, folders["gpt2"], "patient.modules.mlp_down='transformer.h.{}.mlp.c_fc'").patient,
                      cache_dir)
    overridden = patients.load(hf(make_cfg, folders["opt"], "patient.arch=opt",
                                  "patient.modules.mlp='model.decoder.layers.{}.fc1'").patient, cache_dir)
    assert overridden.modules["mlp"] == "model.decoder.layers.{}.fc1"  # one role overridden, the rest preset


def test_the_runner_reports_a_wrong_path_before_the_implant(make_cfg, folders, tmp_path, monkeypatch):
    from repair.runner import run

    def implant_reached(*args, **kwargs):
        raise AssertionError("the implant ran before the bad path was reported")

    monkeypatch.setattr("repair.runner.implant", implant_reached)
    cfg = hf(make_cfg, folders["gpt_neox"], "method=stamp", "patient.modules.attention='gpt_neox.layers.{}.self_attn'")
    with pytest.raises(ValueError, match=r"gpt_neox.layers.0 has no 'self_attn' \(it has: .*attention"):
        run(cfg, tmp_path / "out")


def test_opt_through_the_runner_writes_its_results(make_cfg, folders, tmp_path):
    """The user's path, on the family with the most unusual layout (a flattened MLP input, no MLP module)."""
    import json

    from repair.runner import run

    run(hf(make_cfg, folders["opt"], "method=stamp", *METHODS["stamp"]), tmp_path / "out")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["metrics"]["after"]["f_rl"] < results["metrics"]["before"]["f_rl"] - 0.3
    assert results["unlearn"]["layers"] == [0, 1]


def test_hf_loading_options_reach_from_pretrained(make_cfg, cache_dir, folders):
    """Weights are read in the configured dtype and attention kernel; a bad device_map fails before loading."""
    patient = patients.load(hf(make_cfg, folders["llama"], "patient.dtype=bfloat16",
                               "patient.attn_implementation=eager").patient, cache_dir)
    assert patient.model.dtype == torch.bfloat16 and patient.model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match=r"unknown patient.device_map 'everywhere'; valid: null .*auto, balanced"):
        patients.check_config(hf(make_cfg, folders["llama"], "patient.device_map=everywhere").patient)


def test_unknown_preset_or_role_fails_before_any_weights_load(make_cfg):
    with pytest.raises(ValueError, match=r"unknown patient.arch 'bert'; valid: auto, " + ", ".join(PRESETS)):
        patients.check_config(make_cfg("patient=hf", "patient.name_or_path=x/y", "patient.arch=bert").patient)
    with pytest.raises(ValueError, match=r"patient.modules has unknown role\(s\) \['mlp_up'\]; valid: layers"):
        patients.check_config(make_cfg("patient=hf", "patient.name_or_path=x/y", "+patient.modules.mlp_up=a").patient)


def test_gemma_reads_its_final_norm_as_one_plus_weight(make_cfg, cache_dir, folders):
    """Gemma's norm gain starts at 0 (it multiplies by 1 + weight): read as `weight`, the readout was all zeros."""
    patient = patients.load(hf(make_cfg, folders["gemma2"]).patient, cache_dir)
    assert patient.model.get_submodule("model.norm").weight.abs().max() == 0
    directions = torch.randn(3, patient.model.config.hidden_size, dtype=torch.float64)
    assert torch.equal(readout_gain(patient, directions), directions)
    layernorm = patients.load(hf(make_cfg, folders["gpt2"]).patient, cache_dir)  # its mean is removed by the norm
    assert readout_gain(layernorm, directions).mean(-1).abs().max() < 1e-12


def test_the_baselines_log_probs_are_the_forward_pass_logits_with_gemma2_soft_capping(make_cfg, cache_dir, folders):
    patient = patients.load(hf(make_cfg, folders["gemma2"]).patient, cache_dir)
    patient.model.config.final_logit_softcapping = 0.5  # a random model's logits are far below Gemma-2's cap of 30
    batch = collate(encode(patient.tokenizer, [QA("Who wrote Hamlet?", "William Shakespeare.")]),
                    patient.tokenizer.pad_token_id)
    with torch.no_grad():
        logits, _, _ = answer_logits(patient.model, batch)
        forward = patient.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        uncapped = patient.model.get_output_embeddings()(
            patient.model.base_model(input_ids=batch["input_ids"]).last_hidden_state)
    answer = batch["labels"][:, 1:] != -100
    assert torch.allclose(logits, forward[:, :-1][answer], atol=1e-5)
    assert not torch.allclose(uncapped[:, :-1][answer], forward[:, :-1][answer], atol=1e-3)  # the cap matters here


def test_conv1d_weights_take_the_transposed_delta_and_revert_exactly(make_cfg, cache_dir, folders, tmp_path):
    patient = patients.load(hf(make_cfg, folders["gpt2"]).patient, cache_dir)
    weight = patient.model.get_submodule("transformer.h.1.mlp.c_proj").weight  # Conv1D: (in 256, out 64)
    before = weight.detach().clone()
    left, right = torch.randn(64, 3) * 1e-2, torch.randn(3, 256) * 1e-2
    patch = Patch([Delta("transformer.h.1.mlp.c_proj.weight", left, right, transposed=True)])
    patch.apply(patient.model)
    assert torch.allclose(weight - before, (left @ right).T, atol=1e-6)
    patch.save(tmp_path / "p.safetensors")
    patch.revert(patient.model)
    assert torch.equal(weight, before)
    assert Patch.load(tmp_path / "p.safetensors").deltas[0].transposed


def test_an_edit_that_changes_nothing_is_an_error(make_cfg, fresh_patient):
    """An edit of ~0 norm (here: a strength of 1e-9 with the calibration off) raises, and the weights are as
    before; it is never reported as a success."""
    patient, task = fresh_patient
    before = {k: v.clone() for k, v in patient.model.state_dict().items()}
    stamp = build_method(make_cfg("method=stamp", "method.strength=1e-9", "method.calibrate=false",
                                  "method.contrast_prompts=8", "method.erase=false").method)
    stamp.prepare(task)
    with pytest.raises(EditFailed, match=r"its norm is ~0 at every edited layer"):
        stamp.unlearn(patient, task.forget, task.retain_buffer)
    assert all(torch.equal(v, before[k]) for k, v in patient.model.state_dict().items())
