"""Every config in conf/ composes; bad names fail listing the valid choices."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

import dataclasses

from repair.attacks import ATTACKS, build_attacks, load_builtin
from repair.evaluate import EvalSettings, LmEvalSettings, validate_eval
from repair.methods import build_method
from repair.patient import PATIENT_SOURCES, load
from repair.settings import plain
from repair.tasks import build_task
from tests.conftest import CONF

GROUPS = ["patient", "method", "task", "eval", "logger", "implant"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_config_composes(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}", tiny=False)
    assert cfg[group] is not None
    assert cfg.run_name  # interpolations resolve
    if group == "method":
        assert build_method(cfg.method).name == cfg.method.name


def test_default_config_is_the_documented_default(make_cfg):
    cfg = make_cfg(tiny=False)
    assert (cfg.patient.name, cfg.task.name, cfg.logger.name, cfg.seed) == ("smollm2_135m", "pii", "wandb", 0)
    assert cfg.implant.lr == 4.0e-4  # each patient brings its own implant recipe
    assert make_cfg("patient=tiny", tiny=False).implant.lr == 1.0e-2


@pytest.mark.parametrize("override", ["method=nope", "task=nope", "patient=nope"])
def test_unknown_group_option_lists_valid_choices(make_cfg, override):
    with pytest.raises((ConfigCompositionException, MissingConfigException)) as err:
        make_cfg(override)
    group = override.split("=")[0]
    assert "nope" in str(err.value)
    for valid in options(group):
        assert valid in str(err.value)


def test_unknown_names_in_code_list_valid_choices(cache_dir):
    with pytest.raises(ValueError, match=r"unknown method 'nope'; valid choices: .*ga.*none"):
        build_method({"name": "nope"})
    with pytest.raises(ValueError, match=r"unknown task 'nope'; valid choices: harmful, jsonl, misinformation, mmlu_misinformation, pii, tofu, wmdp"):
        build_task({"name": "nope"}, seed=0)
    with pytest.raises(ValueError, match=r"unknown patient source 'nope'; valid choices: gguf_package, hf, tiny"):
        load({"name": "x", "source": "nope"}, cache_dir)
    assert set(PATIENT_SOURCES.names()) == {"gguf_package", "hf", "tiny"}


def test_bad_values_fail_clearly(make_cfg, cache_dir):
    with pytest.raises(ValueError, match=r"unknown pii attribute\(s\) \['shoe_size'\]; valid choices: birth_date"):
        build_task(make_cfg("task.attributes=[address,shoe_size]").task, seed=0)
    with pytest.raises(ValueError, match=r"task.forget_ratio = 1.5 is invalid; valid: a share in \(0, 1\)"):
        build_task(make_cfg("task.forget_ratio=1.5").task, seed=0)
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; valid choices"):
        load(make_cfg("patient.device=tpu").patient, cache_dir)
    with pytest.raises(ValueError, match="patient.name_or_path"):
        load(make_cfg("patient=hf").patient, cache_dir)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "eval" / "attacks").glob("*.yaml")))
def test_eval_and_attack_settings_come_from_the_yaml_only(make_cfg, option):
    """Every eval/attacks option builds; the settings classes have no defaults of their own, and all.yaml sets every
    setting of every attack (the shared seed comes from eval.attacks.seed)."""
    cfg = make_cfg(f"eval/attacks={option}")
    validate_eval(cfg.eval)
    build_attacks(cfg.eval.attacks)
    attacks = plain(cfg.eval.attacks)
    assert set(attacks) == {"run", "seed", *load_builtin().names()}
    for cls in (EvalSettings, LmEvalSettings, *(ATTACKS.get(name).Settings for name in ATTACKS.names())):
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   for f in dataclasses.fields(cls)), cls
    for name in ATTACKS.names():
        fields = {f.name for f in dataclasses.fields(ATTACKS.get(name).Settings)}
        assert fields == set(attacks[name]) | {"seed"}, name

