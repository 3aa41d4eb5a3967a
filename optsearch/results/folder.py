"""A result folder of ``optsearch run``: its file names, and the one reader of its ``formats.json``.

Gate, deploy, batch, ``evaluate --formats`` and the public API all read a result through
``ResultFolder``; what it reads is a ``RunResult`` (or, for the gate's hand-written baselines, the
parsed JSON). Writing the rendered files belongs to ``optsearch.render``. No Keras here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optsearch.core.errors import OptsearchError
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.results.result import RunResult

FORMATS_FILE = "formats.json"
CSV_FILE = "formats.csv"
REPORT_FILE = "report.md"
LOG_FILE = "search_log.jsonl"
BITWIDTHS_PLOT = "bitwidths.png"
LOSS_PLOT = "loss_steps.png"
#: ``--method pareto``: the predicted front (one row per capacity) and its plot.
PARETO_CSV = "pareto.csv"
PARETO_PLOT = "pareto.png"
#: The quantized Keras model a run writes into its output folder.
MODEL_FILE = "quantized.keras"
#: ``--fold-bn`` runs that folded something: the float model with the BatchNorms folded, which the
#: formats belong to.
FOLDED_MODEL_FILE = "folded_model.keras"


class ResultError(OptsearchError):
    """A result folder or formats.json that is missing or cannot be read."""


@dataclass(frozen=True)
class Recorded:
    """The part of a formats.json that deployment reads: the formats, the model's name, which data the
    run used and how it split them, and the BatchNorms it folded. A formats.json edited down to these
    fields is enough for ``export`` and ``verify`` (docs/deployment.md)."""

    formats: dict[TensorId, Format]
    model_name: str | None
    model_path: str | None
    data: dict[str, Any]
    """``spec``, ``scale``, ``resize``, ``search_fraction``, ``seed``, ``search_samples``,
    ``held_out_samples``: those the file gives."""
    folded: list[str]
    """The BatchNorms the run folded into other layers (``--fold-bn``), in model order."""


@dataclass(frozen=True)
class ResultFolder:
    """The folder a run wrote (or a ``formats.json`` given directly: then its folder)."""

    path: Path
    formats_file: Path

    @classmethod
    def at(cls, path: str | Path) -> ResultFolder:
        """The result at ``path``: a folder written by ``optsearch run``, or its ``formats.json``."""
        path = Path(path)
        if path.suffix == ".json" and not path.is_dir():
            return cls(path.parent, path)
        return cls(path, path / FORMATS_FILE)

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def folded_model_file(self) -> Path:
        return self.path / FOLDED_MODEL_FILE

    def read_data(self) -> dict[str, Any]:
        """The parsed ``formats.json``; a ``ResultError`` says what is missing or unreadable."""
        file = self.formats_file
        if not file.exists():
            if file.name == FORMATS_FILE and self.path.is_dir():
                raise ResultError(
                    f"{self.path} has no {FORMATS_FILE}; give a folder written by `optsearch run` "
                    f"or its {FORMATS_FILE}"
                )
            if file.name == FORMATS_FILE and not self.path.exists():
                raise ResultError(
                    f"result folder not found: {self.path} (pass the --out folder of `optsearch run`)"
                )
            raise ResultError(f"formats file not found: {file}")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ResultError(f"{file} is not a JSON file ({type(err).__name__}: {err})") from err
        if not isinstance(data, dict):
            raise ResultError(f"{file} is not a formats.json written by `optsearch run` (not a JSON object)")
        return data

    def read(self) -> RunResult:
        """The ``RunResult`` of the folder (files written by optsearch 0.1.0 included)."""
        data = self.read_data()
        try:
            return RunResult.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ResultError(
                f"{self.formats_file} is not a formats.json written by `optsearch run` "
                f"({type(err).__name__}: {err})"
            ) from err

    def read_formats(self) -> dict[TensorId, Format]:
        """Only the formats (``layers[].tensors``): what ``evaluate --formats`` needs, so that a
        formats.json edited by hand down to its formats is enough."""
        data = self.read_data()
        try:
            return {
                TensorId(layer["name"], kind): Format(int(t["bw"]), int(t["f"]))
                for layer in data["layers"]
                for kind, t in layer["tensors"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ResultError(
                f"{self.formats_file} is not a formats.json written by `optsearch run` "
                f"({type(err).__name__}: {err})"
            ) from err

    def read_recorded(self) -> Recorded:
        """The part of the formats.json that deployment reads (``Recorded``)."""
        formats = self.read_formats()
        data = self.read_data()
        model = data.get("model") or {}
        folds = model.get("batchnorm_folds") or []
        return Recorded(
            formats=formats,
            model_name=model.get("name"),
            model_path=model.get("path"),
            data=dict(data.get("data") or {}),
            folded=[fold["batchnorm"] for fold in folds if fold.get("into")],
        )

    def write_json(self, result: RunResult) -> None:
        """``formats.json``: everything, rendered from ``result``."""
        self.formats_file.write_text(json.dumps(result.to_dict(), indent=2) + "\n")


def checked_formats(
    formats: Mapping[TensorId, Format], expected: set[TensorId], source: str
) -> dict[TensorId, Format]:
    """``formats`` when they name exactly the ``expected`` tensors; else a ``ResultError`` naming the
    tensors missing and those the model does not have."""
    missing = sorted(str(t) for t in expected - set(formats))
    extra = sorted(str(t) for t in set(formats) - expected)
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + (
            [f"not in the model {', '.join(extra[:5])}"] if extra else []
        )
        raise ResultError(f"{source} does not match the model: {'; '.join(parts)}")
    return dict(formats)
