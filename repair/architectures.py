"""Where each decoder family keeps the modules the framework reads and edits, detected from the model class.

A preset names the module roles of one family: `layers` (the decoder blocks), `mlp` and `attention` (what an
implant or baseline trains with `train_modules: [mlp, attention]`), `mlp_down` (the MLP's output projection, the
weight STAMP edits) and `final_norm` (read by STAMP's refusal readout and the logit lens), plus how that norm
applies its gain. The head is always `get_output_embeddings()`. `patient.arch` picks a preset by name (`auto`: from
`config.model_type`); `patient.modules.<role>` overrides one path. Everything is checked when the patient loads
(`resolve`), before an implant or any other slow step, so a wrong path fails in seconds with the names that exist.

Two layouts are handled where they are read, not by presets: a `Conv1D` weight is stored (in, out), the transpose
of `nn.Linear`'s (GPT-2; `is_transposed`, `weight_shape`), and OPT flattens the MLP input to one row per token
(`repair.refusal.capture_down_proj` restores the positions).

Adding a family: one `Architecture(...)` entry in PRESETS with its model types, then the test in
tests/test_architectures.py that builds a tiny random model of it and runs implant → STAMP, STAMP-LR, GA, RMU.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)

ROLES = ("layers", "mlp", "mlp_down", "attention", "final_norm", "mlp_out_norm")
OPTIONAL = ("mlp_out_norm",)  # null in a preset: the family has no such module
PER_LAYER = ("mlp", "mlp_down", "attention", "mlp_out_norm")  # inside a decoder block: their templates hold `{}` for the index


@dataclass(frozen=True)
class Architecture:
    name: str
    model_types: tuple[str, ...]  # `config.model_type` values this preset is detected for
    layers: str
    mlp: str | tuple[str, ...]  # OPT has no MLP module: its two projections sit on the block
    mlp_down: str
    attention: str
    final_norm: str
    norm_gain: Literal["weight", "one_plus_weight"] = "weight"  # Gemma's RMSNorm multiplies by (1 + weight)
    mlp_out_norm: str | None = None  # an RMSNorm between the MLP output and the residual stream (Gemma-2/3)

    def modules(self) -> dict[str, str | list[str] | None]:
        return {r: list(v) if isinstance(v, tuple) else v for r, v in ((r, getattr(self, r)) for r in ROLES)}


def _llama_like(name: str, *model_types: str, **extra) -> Architecture:
    return Architecture(name, model_types or (name,), "model.layers.{}", "model.layers.{}.mlp",
                        "model.layers.{}.mlp.down_proj", "model.layers.{}.self_attn", "model.norm", **extra)


PRESETS: dict[str, Architecture] = {a.name: a for a in [
    _llama_like("llama", "llama", "mistral", "qwen2", "qwen3", "phi3", "olmo", "olmo2", "granite", "smollm3"),
    _llama_like("gemma", "gemma", "gemma2", "gemma3_text", norm_gain="one_plus_weight",
                mlp_out_norm="model.layers.{}.post_feedforward_layernorm"),
    Architecture("gpt2", ("gpt2",), "transformer.h.{}", "transformer.h.{}.mlp", "transformer.h.{}.mlp.c_proj",
                 "transformer.h.{}.attn", "transformer.ln_f"),
    Architecture("gpt_neox", ("gpt_neox",), "gpt_neox.layers.{}", "gpt_neox.layers.{}.mlp",
                 "gpt_neox.layers.{}.mlp.dense_4h_to_h", "gpt_neox.layers.{}.attention", "gpt_neox.final_layer_norm"),
    Architecture("opt", ("opt",), "model.decoder.layers.{}", ("model.decoder.layers.{}.fc1", "model.decoder.layers.{}.fc2"),
                 "model.decoder.layers.{}.fc2", "model.decoder.layers.{}.self_attn", "model.decoder.final_layer_norm"),
]}
BY_MODEL_TYPE = {t: a for a in PRESETS.values() for t in a.model_types}


def supported() -> str:
    return "; ".join(f"{a.name} ({', '.join(a.model_types)})" for a in PRESETS.values())


def templates(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _missing(model, path: str) -> str | None:
    """Why `path` is not a submodule of `model` (None if it is), naming what exists where the lookup stopped."""
    node, walked = model, []
    for part in path.split("."):
        children = dict(node.named_children())
        if part not in children:
            where = ".".join(walked) or type(model).__name__
            shown = ", ".join(list(children)[:12]) + (", ..." if len(children) > 12 else "")
            return f"{where} has no {part!r} (it has: {shown or 'no submodules'})"
        node, walked = children[part], walked + [part]
    return None


def _fits(model, arch: Architecture, n_layers: int) -> bool:
    return all(_missing(model, t.format(i)) is None for r in ROLES if getattr(arch, r)
               for t in templates(getattr(arch, r)) for i in {0, n_layers - 1})


def check_layout(cfg: dict) -> None:
    """`patient.arch` and the role names of `patient.modules`, checked from the config alone (before weights load)."""
    requested = cfg.get("arch", "auto")
    if requested not in (None, "auto") and requested not in PRESETS:
        raise ValueError(f"unknown patient.arch {requested!r}; valid: auto, {', '.join(PRESETS)}")
    unknown = sorted(set(dict(cfg.get("modules") or {})) - set(ROLES))
    if unknown:
        raise ValueError(f"patient.modules has unknown role(s) {unknown}; valid: {', '.join(ROLES)}")


def detect(model, requested: str | None) -> Architecture:
    """The preset named by `patient.arch`, or (`auto`/None) the one for `config.model_type`; a model type with no
    preset gets the single preset whose every path exists on it."""
    model_type = getattr(model.config, "model_type", "?")
    if requested not in (None, "auto"):
        return PRESETS[requested]
    if model_type in BY_MODEL_TYPE:
        return BY_MODEL_TYPE[model_type]
    fitting = [a for a in PRESETS.values() if _fits(model, a, int(model.config.num_hidden_layers))]
    if len(fitting) == 1:
        log.warning("no preset for model_type %r; its modules are laid out as the %r preset's, which is used "
                    "(set patient.arch to choose another)", model_type, fitting[0].name)
        return fitting[0]
    raise ValueError(f"no architecture preset for model_type {model_type!r} ({type(model).__name__}); supported: "
                     f"{supported()}. Set patient.arch=<preset> to use a preset's layout, or give every path: "
                     f"patient.modules.{{{','.join(ROLES)}}} (quote a value holding {{}} for Hydra: "
                     f"\"patient.modules.mlp_down='transformer.h.{{}}.mlp.c_proj'\")")


def is_transposed(module: torch.nn.Module) -> bool:
    """True for a weight stored (in, out), as transformers' `Conv1D` (GPT-2) keeps it; nn.Linear keeps (out, in)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def weight_shape(module: torch.nn.Module) -> tuple[int, int]:
    """(out, in) of a projection, whatever the layout it stores its weight in."""
    out, inp = module.weight.shape
    return (inp, out) if is_transposed(module) else (out, inp)


def resolve(model, cfg: dict) -> tuple[Architecture, dict[str, Any]]:
    """The preset and every role's path (preset, then the non-null `patient.modules` overrides), checked on the
    loaded model: each path exists at the first and last layer, per-layer roles sit inside their block, `mlp_down`
    is a projection back to the residual width, and the head reads that width."""
    check_layout(cfg)
    arch = detect(model, cfg.get("arch"))
    overrides = {k: v for k, v in dict(cfg.get("modules") or {}).items() if v is not None}
    modules = {**arch.modules(), **{k: (list(v) if not isinstance(v, str) else v) for k, v in overrides.items()}}
    n_layers = int(model.config.num_hidden_layers)
    where = f"patient (model_type {getattr(model.config, 'model_type', '?')!r}, preset {arch.name!r})"

    def bad(role: str, why: str) -> ValueError:
        source = "your override" if role in overrides else f"preset {arch.name!r}"
        return ValueError(f"{where}: patient.modules.{role}={modules[role]!r} ({source}): {why}. Override it with "
                          f"\"patient.modules.{role}='<path with {{}} for the layer index>'\" (quoted for Hydra), or "
                          f"set patient.arch to another preset ({', '.join(PRESETS)})")

    for role in ("layers", "mlp_down", "final_norm"):
        if not isinstance(modules[role], str):
            raise bad(role, "this role takes one path, not a list")
    for role in ROLES:
        if modules[role] is None and role in OPTIONAL:
            continue
        per_layer = role == "layers" or role in PER_LAYER
        for template in templates(modules[role]):
            if per_layer != ("{}" in template):
                raise bad(role, "a per-layer path needs exactly one {} for the layer index" if per_layer
                          else "the final norm is one module, its path has no {}")
            for layer in sorted({0, n_layers - 1}) if per_layer else [None]:
                why = _missing(model, template.format(layer) if per_layer else template)
                if why:
                    raise bad(role, why + (f" at layer {layer}" if per_layer else ""))
            if role in PER_LAYER and not template.startswith(modules["layers"] + "."):
                raise bad(role, f"it is not inside the decoder blocks {modules['layers']!r}")
    hidden = model.get_input_embeddings().weight.shape[1]
    for layer in sorted({0, n_layers - 1}):
        down = model.get_submodule(modules["mlp_down"].format(layer))
        if not (hasattr(down, "weight") and getattr(down.weight, "dim", lambda: 0)() == 2):
            raise bad("mlp_down", f"{type(down).__name__} at layer {layer} has no 2-D weight to edit")
        if weight_shape(down)[0] != hidden:
            raise bad("mlp_down", f"it maps to width {weight_shape(down)[0]} at layer {layer}, not the residual "
                                  f"width {hidden}: that is not the MLP's output projection")
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise ValueError(f"{where}: the model has no output head (get_output_embeddings() is None)")
    return arch, modules


@torch.no_grad()
def through_output_norm(patient, layer: int, values: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """The change of the MLP outputs `values` (n × d, float64) that moves what the block adds to the residual stream
    by `change`, where an RMSNorm sits in between (Gemma: residual += g ⊙ v / rms(v)); without one, `change` itself.
    `change` is sized relative to ‖v‖ (method.strength's unit) and is rescaled to the norm of what the block adds.
    The norm ignores the scale of its input, so the inverse is exact: v' = s · (N(v) + change) / g, with s the scale
    closest to v. (Pushing v itself saturates there: measured on a tiny Gemma-3, the refusal gap fell as the
    strength rose past ~6.)"""
    if not patient.modules.get("mlp_out_norm"):
        return change
    norm = patient.module("mlp_out_norm", layer)
    gain = norm_gain(patient, norm)
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
    rms = (values.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    added = gain * values / rms
    change = change * added.norm(dim=-1, keepdim=True) / values.norm(dim=-1, keepdim=True).clamp_min(1e-24)
    target = (added + change) / gain
    scale = (target * values).sum(-1, keepdim=True) / target.pow(2).sum(-1, keepdim=True).clamp_min(1e-24)
    return scale.clamp_min(1e-3) * target - values


def norm_gain(patient, norm: torch.nn.Module) -> torch.Tensor | None:
    """What a norm of this family multiplies by (float64, CPU): its weight, or 1 + weight (Gemma); None if it has no
    weight."""
    weight = getattr(norm, "weight", None)
    if weight is None:
        return None
    return weight.detach().double().cpu() + (1.0 if patient.arch.norm_gain == "one_plus_weight" else 0.0)


def final_norm(patient) -> torch.nn.Module:
    return patient.model.get_submodule(patient.modules["final_norm"])


@torch.no_grad()
def readout_gain(patient, directions: torch.Tensor) -> torch.Tensor:
    """Residual-stream directions (float64, CPU) that move the logits along `directions` (rows in the head's space):
    through the final norm's gain (Gemma: 1 + weight), and for a LayerNorm with the mean removed, which it ignores."""
    norm = final_norm(patient)
    gain = norm_gain(patient, norm)
    if gain is not None:
        directions = directions * gain
    if isinstance(norm, torch.nn.LayerNorm):
        directions = directions - directions.mean(-1, keepdim=True)
    return directions


def head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The output head on final hidden states, with the model's logit soft-capping (Gemma-2) as its forward does."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits
