"""The result of a run, as plain data: every output (JSON, CSV, Markdown, plots) is rendered from it.

No Keras here. ``RunResult.to_dict`` / ``from_dict`` round-trip through JSON without loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId

FORMATS_SCHEMA = "optsearch.formats/1"

#: The fields of formats.json that differ between two runs with the same model, data, settings and
#: seed on one machine: how long things took. Everything else is byte-identical (docs/robustness.md).
TIMING_FIELDS = ("timings",)


def without_timings(data: dict[str, Any]) -> dict[str, Any]:
    """A formats.json's data without ``TIMING_FIELDS``: what two identical runs agree on, byte for byte."""
    return {key: value for key, value in data.items() if key not in TIMING_FIELDS}


@dataclass(frozen=True)
class TensorResult:
    """The format chosen for one tensor and how the search got there (spec §6)."""

    bw: int
    f: int
    eps: float
    """The tensor's budget ``eps_lp`` (eq. 9)."""
    loss: float
    """``da`` of the network when this tensor was decided (dependent: everything decided so far)."""
    z: float
    """Largest magnitude of the float tensor (activations: over the search set)."""
    bw0: int
    start: tuple[int, int]
    diagonal: tuple[int, int]
    local: tuple[int, int]
    rule: str
    evaluations: int

    @property
    def format(self) -> Format:
        return Format(self.bw, self.f)

    @property
    def ap_fixed(self) -> str:
        """hls4ml's type for this format, or ``pruned`` when BW = 1."""
        fmt = self.format
        return "pruned" if fmt.pruned else fmt.ap_fixed()


@dataclass(frozen=True)
class LayerResult:
    """One quantizable layer: its sizes and the result for each of its tensors."""

    index: int
    name: str
    type: str
    activation_at: str
    weights: int
    biases: int
    activations: int
    macs: int
    tensors: dict[str, TensorResult]
    """Keyed by ``W``, ``B`` (when the layer has a bias), ``A``."""


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy of the float model, the found formats and the 8-bit baseline on one data part."""

    samples: int
    float_model: float
    quantized: float
    quantized_loss: float
    uniform8: float
    uniform8_loss: float


@dataclass(frozen=True)
class Costs:
    """Memory (bits, per type and total), multiply cost and BOPs of one network (spec §8)."""

    memory_bits: dict[str, int]
    memory_bits_total: int
    multiply_cost: int
    bops: int

    @property
    def memory_bytes(self) -> float:
        return self.memory_bits_total / 8


@dataclass(frozen=True)
class RunResult:
    """Everything a run found and measured; rendered to formats.json, formats.csv, report.md, plots."""

    model: dict[str, Any]
    data: dict[str, Any]
    settings: dict[str, Any]
    layers: list[LayerResult]
    accuracy: dict[str, Accuracy]
    """``search`` and, with a split, ``held_out``."""
    costs: dict[str, Costs]
    """``quantized``, ``uniform8`` and ``float32``."""
    steps: list[dict[str, Any]]
    """The loss as the network is quantized step by step (tensor, format, loss), in search order."""
    evaluations: int
    timings: dict[str, float]
    versions: dict[str, str]
    schema: str = FORMATS_SCHEMA
    log: list[str] = field(default_factory=list)

    @property
    def formats(self) -> dict[TensorId, Format]:
        """The found format of every tensor."""
        return {
            TensorId(layer.name, kind): result.format  # type: ignore[arg-type]
            for layer in self.layers
            for kind, result in layer.tensors.items()
        }

    def savings(self, baseline: str) -> dict[str, float]:
        """Relative savings of the found formats against ``uniform8`` or ``float32`` (0.5 = half)."""
        found, base = self.costs["quantized"], self.costs[baseline]
        return {
            "memory": 1.0 - found.memory_bits_total / base.memory_bits_total,
            "multiply_cost": 1.0 - found.multiply_cost / base.multiply_cost,
            "bops": 1.0 - found.bops / base.bops,
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["savings"] = {"vs_uniform8": self.savings("uniform8"), "vs_float32": self.savings("float32")}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Read back what ``to_dict`` wrote (derived fields such as ``savings`` are recomputed)."""
        if data.get("schema") != FORMATS_SCHEMA:
            raise ValueError(
                f"not an optsearch formats file (schema {data.get('schema')!r}, expected {FORMATS_SCHEMA})"
            )
        layers = [
            LayerResult(
                **{
                    **layer,
                    "tensors": {
                        kind: TensorResult(
                            **{
                                **t,
                                "start": tuple(t["start"]),
                                "diagonal": tuple(t["diagonal"]),
                                "local": tuple(t["local"]),
                            }
                        )
                        for kind, t in layer["tensors"].items()
                    },
                }
            )
            for layer in data["layers"]
        ]
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(
            **{
                **fields,
                "layers": layers,
                "accuracy": {k: Accuracy(**v) for k, v in data["accuracy"].items()},
                "costs": {k: Costs(**v) for k, v in data["costs"].items()},
            }
        )
