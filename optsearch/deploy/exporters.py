"""Every exporter behind one protocol: a netlist in, files in a folder out (with notes for the user).

``optsearch export --to NAME``, ``optsearch.export(result, NAME, folder)`` and the contract tests
all go through ``EXPORTERS``; a new target is one more ``Exporter`` here. No Keras.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from optsearch.core.errors import OptsearchError
from optsearch.core.fixedpoint import Format
from optsearch.core.netlist import Netlist
from optsearch.results.folder import Recorded


@dataclass(frozen=True)
class Written:
    """What an exporter wrote: the file names (in the folder) and notes for the user."""

    files: list[str]
    notes: list[str] = field(default_factory=list)


class Exporter(Protocol):
    """Writes one deployment target's files for a quantized network."""

    @property
    def name(self) -> str:
        """The ``--to`` name."""
        ...

    @property
    def description(self) -> str:
        """What it writes, in a line."""
        ...

    def write(
        self,
        netlist: Netlist,
        folder: Path,
        model_name: str,
        source: str,
        recorded: Recorded,
        **options: Any,
    ) -> Written:
        """Write the target's files for ``netlist`` into ``folder`` (which exists and is empty).

        ``source`` names the result they come from; ``recorded`` is what its formats.json says.
        """
        ...


@dataclass(frozen=True)
class Hls4mlExporter:
    """hls4ml's per-layer configuration: every precision ``ap_fixed<BW, BW-F, AP_RND_CONV, AP_SAT_SYM>``."""

    name: str = "hls4ml"
    description: str = "hls4ml_config.json / .yml / .py (per-layer precisions, accumulators exact)"

    def write(
        self,
        netlist: Netlist,
        folder: Path,
        model_name: str,
        source: str,
        recorded: Recorded,
        **options: Any,
    ) -> Written:
        """``options``: ``input_format`` ``(BW, F)``, ``input_range``, ``input_bits`` (see
        ``export_hls4ml.export``)."""
        from optsearch.deploy.export_hls4ml import export, write_files

        input_format = options.get("input_format")
        exported = export(
            netlist,
            input_format=Format(*input_format) if input_format else None,
            input_range=options.get("input_range"),
            input_bits=int(options.get("input_bits", 16)),
        )
        files = write_files(exported, folder, model_name, source, recorded.folded)
        return Written(files, list(exported.notes))


@dataclass(frozen=True)
class CExporter:
    """A C header with the integer weights and formats, and a reference C inference."""

    name: str = "c"
    description: str = "MODEL_model.h (integer weights, shifts, formats), MODEL_ref.c + optsearch_ref.h"

    def write(
        self,
        netlist: Netlist,
        folder: Path,
        model_name: str,
        source: str,
        recorded: Recorded,
        **options: Any,
    ) -> Written:
        from optsearch.deploy.export_c import export

        exported = export(netlist, source)
        return Written(exported.write(folder), list(exported.notes))


@dataclass(frozen=True)
class QonnxExporter:
    """An ONNX model with a QONNX ``Quant`` node at every weight, bias and activation format (needs onnx)."""

    name: str = "qonnx"
    description: str = "model.onnx (QONNX: a Quant node at every format; input channels last, batch 1)"

    def write(
        self,
        netlist: Netlist,
        folder: Path,
        model_name: str,
        source: str,
        recorded: Recorded,
        **options: Any,
    ) -> Written:
        from optsearch.deploy.export_qonnx import export

        exported = export(netlist, source)
        return Written(exported.write(folder), list(exported.notes))


#: Every exporter, by its ``--to`` name.
EXPORTERS: dict[str, Exporter] = {"hls4ml": Hls4mlExporter(), "c": CExporter(), "qonnx": QonnxExporter()}


def exporter(name: str) -> Exporter:
    """The exporter called ``name``; an ``OptsearchError`` lists the valid names."""
    try:
        return EXPORTERS[name]
    except KeyError:
        raise OptsearchError(f"unknown export target {name!r}; valid: {', '.join(EXPORTERS)}") from None
