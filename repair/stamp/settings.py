"""STAMP's settings, checked once when the method is built. Their values and what each one does are documented in
conf/method/stamp.yaml and conf/method/stamp_lowrank.yaml (the one place the defaults live)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from repair.methods import MethodSettings
from repair.settings import require

Target = Literal["refusal_readout", "refusal", "unknown", "direction"]
Keys = Literal["answer_start", "subject"]


@dataclass
class StampSettings(MethodSettings):
    keys: Keys
    target: Target
    layers: Literal["auto"] | list[int]
    layer_selection: Literal["last", "separation"]
    num_layers: int
    span_tokens: int
    strength: float
    calibrate: bool
    calibrate_margin: float
    calibrate_steps: int
    calibrate_factor: float
    max_strength: float
    calibrate_checks: int
    check_tokens: int
    retain_weight: float
    cov_weight: float
    contrast_prompts: int
    contrast_source: Literal["forget", "buffer"]
    contrast_weight: float
    contrast_neighbours: float
    eps: float
    refusal_rank: int
    num_refusals: int
    max_relative_norm: float | None
    store_keys: bool
    precision: Literal["float32", "float64"]
    gram_budget_gb: float | None
    forget_contexts: list[Literal["turn", "system"]]
    erase: bool
    erase_references: int
    erase_strength: float
    erase_margin: float
    erase_max_strength: float
    erase_goal: Literal["gap", "nll"]
    erase_positions: Literal["all", "first"]
    seed: int

    def check(self) -> None:
        if (self.keys == "answer_start") != (self.target == "refusal_readout"):
            raise ValueError("method.target=refusal_readout goes with method.keys=answer_start (the readout is where "
                             "the answer begins); the other targets use method.keys=subject; got "
                             f"target={self.target!r}, keys={self.keys!r}")
        for key in ("num_layers", "span_tokens", "num_refusals", "refusal_rank", "check_tokens", "erase_references"):
            require(getattr(self, key) >= 1, f"method.{key}", getattr(self, key), "an integer >= 1")
        for key in ("calibrate_steps", "calibrate_checks", "contrast_prompts"):
            require(getattr(self, key) >= 0, f"method.{key}", getattr(self, key), "an integer >= 0")
        for key in ("strength", "max_strength", "calibrate_factor", "eps", "erase_strength",
                    "erase_max_strength"):
            require(getattr(self, key) > 0, f"method.{key}", getattr(self, key), "a number > 0")
        for key in ("retain_weight", "cov_weight", "contrast_weight", "erase_margin"):
            require(getattr(self, key) >= 0, f"method.{key}", getattr(self, key), "a number >= 0")
        require(0 <= self.contrast_neighbours <= 1, "method.contrast_neighbours", self.contrast_neighbours,
                "a share in [0, 1]")
        require(self.gram_budget_gb is None or self.gram_budget_gb >= 0, "method.gram_budget_gb",
                self.gram_budget_gb, "null (every held Gram on the patient's device) or a number of GB >= 0")
        require(self.max_relative_norm is None or self.max_relative_norm > 0, "method.max_relative_norm",
                self.max_relative_norm, "null (no bound) or a number > 0")


@dataclass
class StampLowRankSettings(StampSettings):
    rank: int
    krylov_steps: int

    def check(self) -> None:
        super().check()
        require(self.rank >= 1, "method.rank", self.rank, "an integer >= 1")
        require(self.krylov_steps >= 0, "method.krylov_steps", self.krylov_steps, "an integer >= 0")
