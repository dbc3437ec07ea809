"""A resource plan before a run: the memory each phase of the composed config should need, on the configured
device, from the config files alone.

    python -m repair.resources patient=llama3_8b patient.name_or_path=/models/Meta-Llama-3-8B-Instruct method=npo
    python run.py ... ++dry_run=true          # the same table, then stop

The patient's `config.json` (or the GGUF header, or the `tiny` architecture) is read and the model is built on
PyTorch's `meta` device: every parameter's exact shape, no weights, no network for a local folder. It plans for the
configured device even where this machine lacks it (`patient.device=cuda` on a laptop). Figures are estimates:
weights, gradients, AdamW states, float32 masters and LoRA factors are exact byte counts; activations, logits and
STAMP's key store follow the formulas below, checked against measured peaks on the CPU patients
(tests/test_resources.py, docs/resources.md). On the device: what the phase holds there. On the host: what it holds
in host memory beyond the framework's own footprint (`RUNTIME_MB`: Python, torch, tokenizer, measured ~0.6 GB).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from repair.architectures import resolve as resolve_architecture, weight_shape
from repair.patient import DTYPES, Patient, hf_location
from repair.settings import plain

log = logging.getLogger(__name__)

GB = 2**30
RUNTIME_MB = 730  # the process beside the weights: Python, torch, transformers, tokenizer, task, evaluation (measured:
#                  a method=none run of the default patient peaks at 1249 MB with 516 MB of weights; CUDA adds its own)
ANSWER_TOKENS = 32  # per example: the positions whose logits the training losses read (answer tokens only)
ADAM_BYTES = 8  # two float32 moments per trained value


def model_config(cfg: dict, cache_dir: Path):
    """The transformers config of a patient, without its weights."""
    from transformers import AutoConfig, LlamaConfig

    from repair.patient import _gguf_location

    if cfg["source"] == "hf":
        kind, where = hf_location(cfg["name_or_path"])
        return AutoConfig.from_pretrained(where, local_files_only=kind == "local",
                                          trust_remote_code=bool(cfg.get("trust_remote_code", False)))
    if cfg["source"] == "gguf_package":
        folder, filename, _ = _gguf_location(cfg)
        return AutoConfig.from_pretrained(folder, gguf_file=filename)
    tok = dict(cfg["tokenizer"])
    folder, filename, _ = _gguf_location(tok)
    vocab = AutoConfig.from_pretrained(folder, gguf_file=filename).vocab_size
    return LlamaConfig(vocab_size=vocab, tie_word_embeddings=True, **dict(cfg["architecture"]))


def meta_patient(cfg: dict, cache_dir: Path) -> Patient:
    """The patient's modules with every parameter on the meta device (shapes only), roles resolved and checked."""
    from transformers import AutoModelForCausalLM

    config = model_config(cfg, cache_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    patient = Patient(cfg["name"], model, None, "meta")
    patient.arch, patient.modules = resolve_architecture(model, cfg)
    return patient


def planned_device(cfg: dict) -> tuple[str, torch.dtype]:
    """The device type and dtype a config asks for, whether or not this machine has that device."""
    device = str(cfg.get("device", "auto"))
    kind = "cuda" if device.startswith("cuda") else "cpu" if device == "cpu" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    dtype = cfg.get("dtype", "float32")
    return kind, (torch.bfloat16 if kind == "cuda" else torch.float32) if dtype == "auto" else DTYPES[dtype]


@dataclass
class Phase:
    name: str
    device: dict[str, float] = field(default_factory=dict)  # what → bytes on the patient's device
    host: dict[str, float] = field(default_factory=dict)  # what → bytes in host memory beyond the runtime

    @property
    def device_bytes(self) -> float:
        return sum(self.device.values())

    @property
    def host_bytes(self) -> float:
        return sum(self.host.values())


def _bytes(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


def training_phase(name: str, patient: Patient, dtype: torch.dtype, layers: Any, modules: Any, batch: int,
                   length: int, lora_rank: int = 0, checkpointing: bool = False, retain_term: bool = False) -> Phase:
    """Weights, then what training adds: gradients, AdamW, float32 masters for half weights (or LoRA factors in
    float32 with their gradients and AdamW), activations kept for backward, and the answer positions' logits. A
    retain term is backpropagated after the forget term, yet resident memory holds both (measured: NPO with its
    retain term +0.8 GB over GA on the default patient), so its activations count again."""
    from repair.training import lora_targets, select_parameters

    b = _bytes(dtype)
    trained = select_parameters(patient, layers, modules, name)
    phase = Phase(name, device={"weights": n_params(patient.model) * b})
    if lora_rank:  # as `training.low_rank_adapters` splits them: adapted projections, the rest trained in full
        adapted = lora_targets(patient.model, trained)
        factors = sum(lora_rank * sum(weight_shape(patient.model.get_submodule(o))) for o in adapted)
        rest = sum(p.numel() for n, p in trained.items() if n.removesuffix(".weight") not in adapted)
        phase.device["lora factors, gradients, AdamW (float32)"] = factors * (4 + 4 + ADAM_BYTES)
        if rest:
            phase.device["other trained weights: gradients, AdamW"] = rest * (b + ADAM_BYTES)
    else:
        count = sum(p.numel() for p in trained.values())
        phase.device["gradients"] = count * b
        phase.device["AdamW states (float32)"] = count * ADAM_BYTES
        if b < 4:
            phase.device["float32 master weights"] = count * 4
    cfg = patient.model.config
    d, n_layers = cfg.hidden_size, cfg.num_hidden_layers
    m = max(weight_shape(patient.module("mlp_down", 0))[1], d)
    tokens = batch * length
    per_layer = tokens * b * (10 * d + 4 * m)  # norms, q/k/v/o inputs and outputs, gate/up/act/down inputs
    kept = n_layers * tokens * d * b + per_layer if checkpointing else n_layers * per_layer
    phase.device["activations kept for backward" + (" (checkpointed)" if checkpointing else "")] = kept
    if retain_term:
        phase.device["the retain term's activations"] = kept
    phase.device["answer logits and their gradient (float32)"] = batch * ANSWER_TOKENS * cfg.vocab_size * 4 * 3
    return phase


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are one parameter


def stamp_phase(patient: Patient, dtype: torch.dtype, method: dict, buffer_items: int | None) -> Phase:
    """Keys, Grams and solves on the patient's device in `method.precision`: the forward passes (one batch of 16
    prompts × 128 tokens at a time; each layer's keys are reduced as the layer runs), the held Grams (m × m per edited
    layer, past `method.gram_budget_gb` in host memory), one layer's solve at a time (STAMP: the system and its
    Cholesky factor, m × m each; STAMP-LR: its r-dimensional basis, never m × m), the retain buffer's keys at every
    token (~64 per item) and the request's contrast keys. On the host: the edited weights as they were (the patch
    keeps them to revert) and the stored contrast keys in the model's dtype."""
    b = _bytes(dtype)
    p = 8 if method.get("precision") == "float64" else 4
    edited = method["num_layers"] if method["layers"] == "auto" else len(method["layers"])
    edited = min(edited, patient.num_layers)
    m = weight_shape(patient.module("mlp_down", 0))[1]
    d = patient.model.config.hidden_size
    tokens = 16 * 128
    # forward passes hold about two layers' intermediates at once (measured: 0.19 GB for 16 × 128 tokens on the
    # default patient, against 0.09 GB for one layer's norms, attention and MLP inputs and outputs), and the
    # allocator keeps about one more across the step's many passes (the step's peak moved by 0.1 GB between sittings)
    phase = Phase(method["name"], device={"weights": n_params(patient.model) * b,
                                          "forward passes of 16 prompts × 128 tokens": 3 * tokens * (10 * d + 4 * m) * b})
    budget = method.get("gram_budget_gb")
    on_device = edited if budget is None else min(edited, int(budget * 1e9 // (m * m * p)))
    phase.device[f"held Grams ({'float64' if p == 8 else 'float32'}, m × m per edited layer)"] = on_device * m * m * p
    if on_device < edited:
        phase.host["held Grams past gram_budget_gb"] = (edited - on_device) * m * m * p
    if method["name"] == "stamp_lowrank":
        r = min(int(method.get("rank", 0)), m)
        phase.device["one layer's solve: basis, its products, top directions"] = 3 * m * r * p + edited * m * r * p
    else:
        phase.device["one layer's solve: system and Cholesky factor"] = 2 * m * m * p
    held_rows = (buffer_items if buffer_items is not None else 32) * 64 + method["contrast_prompts"]
    phase.device["retain-buffer and contrast keys and outputs"] = edited * held_rows * (m + d) * p
    phase.host["edited weights kept to revert"] = edited * m * d * b
    phase.host["stored contrast keys (model dtype)"] = edited * method["contrast_prompts"] * (m + d) * b
    return phase


def task_sizes(cfg: dict) -> tuple[int | None, int | None]:
    """The task's forget set and retain buffer sizes, where the task builds without data files (None otherwise)."""
    from repair.tasks import build_task

    try:
        task = build_task(cfg["task"], int(cfg.get("seed", 0)))
    except Exception:  # a real-data task without its source here: the plan says '?'
        return None, None
    return len(task.forget), len(task.retain_buffer)


def plan(cfg) -> tuple[list[Phase], dict[str, Any]]:
    """The phases of the composed config's run and their memory, with what they were planned for."""
    cfg = plain(cfg)
    patient_cfg, method = cfg["patient"], cfg["method"]
    patient = meta_patient(patient_cfg, Path(str(cfg.get("cache_dir", "."))).expanduser())
    kind, dtype = planned_device(patient_cfg)
    b = _bytes(dtype)
    phases = [Phase("load", device={"weights": n_params(patient.model) * b})]
    imp = cfg.get("implant") or {}
    if imp.get("enabled", False):
        phases.append(training_phase("implant", patient, dtype, imp["train_layers"], imp["train_modules"],
                                     imp["batch_size"], imp["max_length"], imp.get("lora_rank", 0),
                                     imp.get("gradient_checkpointing", False)))
    n_forget, n_buffer = task_sizes(cfg)
    if method["name"] in ("stamp", "stamp_lowrank"):
        phases.append(stamp_phase(patient, dtype, method, n_buffer))
    elif "lr" in method:
        layers = method["train_layers"]
        if method["name"] == "rmu" and layers == "auto":
            layers = [i for i in (method["layer"] - 2, method["layer"] - 1, method["layer"]) if i >= 0]
        phase = training_phase(method["name"], patient, dtype, layers, method["train_modules"],
                               method["batch_size"], method["max_length"], method.get("lora_rank", 0),
                               method.get("gradient_checkpointing", False), method.get("retain_weight", 0) > 0)
        if method["name"] == "asu":  # the smoothed teacher's distributions at every forget answer position
            per_example = ANSWER_TOKENS * patient.model.config.vocab_size * 4
            phase.device[f"teacher distributions ({n_forget or '?'} forget examples)"] = per_example * (n_forget or 1)
        phases.append(phase)
    info = {"patient": patient_cfg["name"], "device": kind, "dtype": str(dtype).removeprefix("torch."),
            "parameters": n_params(patient.model), "layers": patient.num_layers, "arch": patient.arch.name}
    return phases, info


def render(phases: list[Phase], info: dict[str, Any]) -> str:
    device = info["device"].upper() if info["device"] == "cuda" else "CPU"
    lines = [f"Resource plan: {info['patient']} ({info['arch']}, {info['parameters'] / 1e9:.2f} B parameters, "
             f"{info['layers']} layers) on {info['device']} in {info['dtype']}",
             f"{'phase':<14} {'on ' + device:>12} {'host':>10}   largest parts"]
    for p in phases:
        parts = sorted({**p.device, **{f"{k} [host]": v for k, v in p.host.items()}}.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} {v / GB:.2f}" for k, v in parts[:3])
        host = p.host_bytes + RUNTIME_MB * 2**20 + (p.device_bytes if info["device"] == "cpu" else 0)
        lines.append(f"{p.name:<14} {p.device_bytes / GB:>9.2f} GB {host / GB:>7.2f} GB   {shown}")
    lines.append("(GB = GiB; host includes the runtime's ~0.7 GB" + (", and on the CPU the device column too)"
                                                                    if info["device"] == "cpu" else ")"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from repair.setup import compose

    cfg = compose("config", list(sys.argv[1:] if argv is None else argv))
    print(render(*plan(cfg)))  # noqa: T201 - the plan is the command's output


if __name__ == "__main__":
    main()
