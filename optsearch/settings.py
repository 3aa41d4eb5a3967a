"""The settings of one run, typed: what the CLI, YAML files, batch jobs, resume and formats.json share.

``RunSettings`` is the one shape of a run's settings. The schema (``optsearch.config``) builds it from
command-line options and YAML fields; the runner reads it; ``formats.json`` records it
(``recorded()``, read back by ``from_recorded``), and ``--resume`` compares its ``fingerprint()``.
Where a run writes to (``--out``, ``--overwrite``, ``--resume``) is not a setting of the result and
is passed beside it. No Keras here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from optsearch.core.allocation import Allocation
from optsearch.core.tensors import ActivationPoint, FoldMode, TensorKind
from optsearch.methods.opt_search import SearchSettings

DEFAULT_BATCH_SIZE = 500
DEFAULT_CACHE_MB = 1024.0

#: Search samples for the noise gains behind every report's predicted bits (issue 23).
DEFAULT_PREDICT_SAMPLES = 500

#: Settings that change only speed and memory, never a number of the result.
PERFORMANCE_ONLY = ("batch_size", "cache_mb")
#: Settings that change what the report predicts beside the found formats, never the formats.
REPORT_ONLY = ("predict_samples",)


@dataclass(frozen=True)
class DataSettings:
    """Where the evaluation data come from and how they are prepared and split (spec §4)."""

    spec: str
    scale: float | None = None
    resize: tuple[int, int] | None = None
    search_fraction: float = 0.5
    seed: int = 0
    data_dir: str | None = None

    def recorded(self) -> dict[str, Any]:
        """The data settings as formats.json records them (beside what was measured)."""
        return {
            "spec": self.spec,
            "search_fraction": self.search_fraction,
            "seed": self.seed,
            "scale": self.scale,
            "resize": list(self.resize) if self.resize else None,
        }


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides a run's result: the model, the data, Alg. 2's settings, the engine's."""

    model: Path
    data: DataSettings
    search: SearchSettings = field(default_factory=SearchSettings)
    unsafe_load: bool = False
    activation_point: ActivationPoint = "activation"
    fold_bn: FoldMode = "off"
    batch_size: int = DEFAULT_BATCH_SIZE
    input_bits: int = 8
    cache_mb: float = DEFAULT_CACHE_MB
    predict_samples: int = DEFAULT_PREDICT_SAMPLES
    """Search samples for the noise gains of the report's predicted bits; 0 skips the prediction."""

    def with_search(self, **changes: Any) -> RunSettings:
        """These settings with some of Alg. 2's changed (``eps=0.005``)."""
        return replace(self, search=replace(self.search, **changes))

    def recorded(self) -> dict[str, Any]:
        """The ``settings`` of formats.json: Alg. 2's settings and the engine's, in a fixed order."""
        s = self.search
        return {
            "eps": s.eps,
            "independent": s.independent,
            "bw0": dict(s.bw0),
            "bw0_step": s.bw0_step,
            "bw0_cap": s.bw0_cap,
            "delta": s.delta,
            "offset_rule": s.offset_rule,
            "type_order": list(s.type_order),
            "layer_order": s.layer_order,
            "interleave": s.interleave,
            "allocation": {kind: asdict(rule) for kind, rule in s.allocation.items()},
            "criterion": s.criterion,
            "confidence": s.confidence,
            "certify_fraction": s.certify_fraction,
            "method": s.method,
            "warm_start": s.warm_start,
            **({"objective": s.objective, "sensitivity": s.sensitivity} if s.method == "pareto" else {}),
            "activation_point": self.activation_point,
            "fold_bn": self.fold_bn,
            "input_bits": self.input_bits,
            "batch_size": self.batch_size,
            "cache_mb": self.cache_mb,
            # Absent when 0, as in the files written before it existed (they predicted nothing).
            **({"predict_samples": self.predict_samples} if self.predict_samples else {}),
        }

    @classmethod
    def from_recorded(
        cls, model: Mapping[str, Any], data: Mapping[str, Any], settings: Mapping[str, Any]
    ) -> RunSettings:
        """The settings a formats.json recorded (its ``model``, ``data`` and ``settings`` parts).

        Values are kept as recorded (``1024`` stays an int), so that a file reads back byte for byte.
        """
        defaults = SearchSettings()
        bw0: dict[TensorKind, int] = {k: int(v) for k, v in settings["bw0"].items()}
        allocation: dict[TensorKind, Allocation] = {
            kind: Allocation(**rule) for kind, rule in settings["allocation"].items()
        }
        search = SearchSettings(
            eps=settings["eps"],
            independent=bool(settings["independent"]),
            bw0=bw0,
            bw0_step=settings.get("bw0_step", defaults.bw0_step),
            bw0_cap=settings.get("bw0_cap", defaults.bw0_cap),
            delta=settings["delta"],
            offset_rule=settings["offset_rule"],
            type_order=tuple(settings["type_order"]),
            layer_order=settings["layer_order"],
            interleave=bool(settings["interleave"]),
            allocation=allocation,
            # formats.json files of 0.1.0 have neither: they searched with Alg. 2's own test.
            criterion=settings.get("criterion", "paper"),
            confidence=settings.get("confidence", defaults.confidence),
            certify_fraction=settings.get("certify_fraction", 0.0),
            method=settings.get("method", "paper"),  # files before issue 23 searched
            warm_start=settings.get("warm_start", "none"),  # older files started at BW0
            objective=settings.get("objective", "memory"),  # recorded by method pareto only
            sensitivity=settings.get("sensitivity", "measured"),
        )
        resize = data.get("resize")
        return cls(
            model=Path(str(model["path"])),
            data=DataSettings(
                spec=str(data["spec"]),
                scale=data.get("scale"),
                resize=(int(resize[0]), int(resize[1])) if resize else None,
                search_fraction=data.get("search_fraction", 1.0),
                seed=data.get("seed", 0),
            ),
            search=search,
            activation_point=settings.get("activation_point", "activation"),
            fold_bn=settings.get("fold_bn", "off"),
            input_bits=settings.get("input_bits", 8),
            batch_size=settings.get("batch_size", DEFAULT_BATCH_SIZE),
            cache_mb=settings.get("cache_mb", DEFAULT_CACHE_MB),
            predict_samples=settings.get("predict_samples", 0),  # older files predicted nothing
        )

    def differences(self, other: RunSettings) -> list[str]:
        """How ``other``'s result-deciding settings differ from these (speed-only settings left out),
        as ``eps 0.02 in the result, 0.01 here`` with ``other`` as the result."""
        out = []
        mine, theirs = _json(self.recorded()), _json(other.recorded())
        for key in sorted(set(mine) | set(theirs)):
            if key not in PERFORMANCE_ONLY + REPORT_ONLY and mine.get(key) != theirs.get(key):
                out.append(f"{key} {theirs.get(key)!r} in the result, {mine.get(key)!r} here")
        data_mine, data_theirs = self.data.recorded(), other.data.recorded()
        for key in ("spec", "search_fraction", "seed", "scale", "resize"):
            if data_mine[key] != data_theirs[key]:
                out.append(f"data {key} {data_theirs[key]!r} in the result, {data_mine[key]!r} here")
        return out

    def fingerprint(self, model_sha256: str | None, data_sha256: str | None) -> dict[str, Any]:
        """What ``--resume`` compares: the settings (not ``cache_mb``), the files by sha256, versions
        are added by the caller. ``batch_size`` is kept: it decides how the data are batched."""
        data: dict[str, Any] = {
            "spec": self.data.spec,
            "scale": self.data.scale,
            "resize": list(self.data.resize) if self.data.resize else None,
            "search_fraction": self.data.search_fraction,
            "seed": self.data.seed,
        }
        if data_sha256 is not None:
            data["sha256"] = data_sha256
        model: dict[str, Any] = {"path": str(self.model)}
        if model_sha256 is not None:
            model["sha256"] = model_sha256
        return {
            "settings": {k: v for k, v in self.recorded().items() if k not in ("cache_mb", *REPORT_ONLY)},
            "model": model,
            "data": data,
            "unsafe_load": self.unsafe_load,
        }


def _json(value: Mapping[str, Any]) -> dict[str, Any]:
    """JSON's view of the data (tuples become lists), so recorded and expected settings compare."""
    import json

    out: dict[str, Any] = json.loads(json.dumps(value))
    return out
