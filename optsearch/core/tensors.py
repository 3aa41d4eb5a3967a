"""Names for the tensors the search decides a format for (spec §3): ``W_l``, ``B_l``, ``A_l``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TensorKind = Literal["W", "B", "A"]
TENSOR_KINDS: tuple[TensorKind, ...] = ("W", "B", "A")
KIND_NAMES: dict[TensorKind, str] = {"W": "weights", "B": "biases", "A": "activations"}

#: Where ``A_l`` is taken (spec §3): after the activation function, or at the end of the element-wise chain.
ActivationPoint = Literal["activation", "chain_end"]
ACTIVATION_POINTS: tuple[ActivationPoint, ...] = ("activation", "chain_end")

#: ``--fold-bn``: no folding, only folds that keep the function, or also those that change borders.
FoldMode = Literal["off", "exact", "all"]
FOLD_MODES: tuple[FoldMode, ...] = ("off", "exact", "all")


@dataclass(frozen=True, order=True)
class TensorId:
    """One quantized tensor: the weights, biases or activations of a named layer."""

    layer: str
    kind: TensorKind

    def __post_init__(self) -> None:
        if self.kind not in TENSOR_KINDS:
            raise ValueError(f"tensor kind must be one of {', '.join(TENSOR_KINDS)}, got {self.kind!r}")

    def __str__(self) -> str:
        return f"{self.layer}:{self.kind}"

    @classmethod
    def parse(cls, text: str) -> TensorId:
        """Read the ``str()`` form ``"layer:W"``."""
        layer, sep, kind = text.rpartition(":")
        if not sep or not layer or kind not in TENSOR_KINDS:
            raise ValueError(f"a tensor is written 'LAYER:W', 'LAYER:B' or 'LAYER:A', got {text!r}")
        return cls(layer, kind)
