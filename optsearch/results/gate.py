"""The CI gate: compare a run's formats.json with a baseline and say, layer by layer, what regressed.

A regression is a held-out loss above the limit (the run's eps unless ``max_loss``), memory or
multiply cost above the baseline's by more than ``tolerance``, or, with ``exact``, any changed
format. Pure: JSON in, findings out; JUnit XML (``xml.etree``) for CI systems to display.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optsearch.core.costs import multiply_cost, tensor_memory_bits
from optsearch.core.errors import OptsearchError
from optsearch.core.tensors import TENSOR_KINDS, TensorKind
from optsearch.results.folder import FORMATS_FILE, ResultError, ResultFolder

#: Loss comparisons forgive float noise this small (losses are ratios of sample counts).
_LOSS_SLACK = 1e-12


class GateError(OptsearchError):
    """A result or baseline that cannot be read (missing, not JSON, or lacking a field the gate needs)."""


# --------------------------------------------------------------------------------------------------
# What the gate reads from a formats.json


@dataclass(frozen=True)
class LayerSnapshot:
    """One layer's sizes and the format of each of its tensors."""

    name: str
    weights: int
    biases: int
    activations: int
    macs: int
    formats: dict[str, tuple[int, int]]
    """``(BW, F)`` keyed by ``W``, ``B`` (when the layer has a bias), ``A``."""

    @property
    def memory_bits(self) -> int:
        """Bits to store the layer's tensors (activations per sample), as the cost model counts them."""
        counts: dict[TensorKind, int] = {"W": self.weights, "B": self.biases, "A": self.activations}
        return tensor_memory_bits(counts, {kind: bw for kind, (bw, _) in self.formats.items()})  # type: ignore[misc]

    @property
    def multiply_cost(self) -> int:
        """``MACs * BW_W * BW_A`` (the paper's figure, eq. 7)."""
        if "W" not in self.formats or "A" not in self.formats:
            return 0
        return multiply_cost(self.macs, self.formats["W"][0], self.formats["A"][0])


@dataclass(frozen=True)
class Snapshot:
    """The numbers of one run the gate compares: losses, costs, per-layer formats."""

    source: str
    model: str
    sha256: str | None
    eps: float
    search_loss: float
    held_out_loss: float | None
    """None when the run searched and reported on all data (no held-out set)."""
    memory_bits: int
    multiply_cost: int
    layers: tuple[LayerSnapshot, ...]
    loss_uncertainty: str = ""
    """``(95% CI 0.10% .. 1.31%, n 5000)`` for the loss the gate checks, when the file records it."""

    @property
    def tensor_count(self) -> int:
        return sum(len(layer.formats) for layer in self.layers)


def read_snapshot(path: str | Path) -> Snapshot:
    """The snapshot of a formats.json, or of the run folder holding one (read by ``ResultFolder``).

    A baseline may be a formats.json edited down by hand to the fields the gate reads (docs/batch.md),
    so the gate takes its numbers from the parsed file, not from a whole ``RunResult``.
    """
    folder = ResultFolder.at(path)
    try:
        data = folder.read_data()
    except ResultError as err:
        file = folder.formats_file
        if not file.exists() and (file.name != FORMATS_FILE or not folder.path.is_dir()):
            raise GateError(
                f"{file} not found; give a folder written by `optsearch run` or its {file.name}"
            ) from err
        raise GateError(str(err)) from err
    return snapshot(data, str(folder.formats_file))


def snapshot(data: object, source: str) -> Snapshot:
    """The snapshot of formats.json data; a ``GateError`` names the first field that is missing or wrong."""
    try:
        assert isinstance(data, dict), "the top level is not a JSON object"
        accuracy = data["accuracy"]
        costs = data["costs"]["quantized"]
        held = accuracy.get("held_out")
        layers = tuple(
            LayerSnapshot(
                name=str(layer["name"]),
                weights=int(layer["weights"]),
                biases=int(layer["biases"]),
                activations=int(layer["activations"]),
                macs=int(layer.get("macs", 0)),
                formats={
                    str(kind): (int(t["bw"]), int(t["f"]))
                    for kind, t in sorted(
                        layer["tensors"].items(), key=lambda item: TENSOR_KINDS.index(item[0])
                    )
                },
            )
            for layer in data["layers"]
        )
        model = data.get("model", {})
        return Snapshot(
            source=source,
            model=str(model.get("name", "")),
            sha256=model.get("sha256"),
            eps=float(data["settings"]["eps"]),
            search_loss=float(accuracy["search"]["quantized_loss"]),
            held_out_loss=None if held is None else float(held["quantized_loss"]),
            memory_bits=int(costs["memory_bits_total"]),
            multiply_cost=int(costs["multiply_cost"]),
            layers=layers,
            loss_uncertainty=_uncertainty(accuracy["search"] if held is None else held),
        )
    except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as err:
        what = f"missing field {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise GateError(
            f"{source} is not a formats.json the gate can read ({what}); it needs settings.eps, "
            "accuracy.search.quantized_loss, costs.quantized.memory_bits_total and .multiply_cost, "
            "and layers[] with name, weights, biases, activations and tensors {W/B/A: {bw, f}}"
        ) from err


# --------------------------------------------------------------------------------------------------
# The comparison


@dataclass(frozen=True)
class Limits:
    """What counts as a regression."""

    max_loss: float | None = None
    """Largest acceptable held-out loss; None = the run's own eps."""
    tolerance: float = 0.01
    """How far memory and multiply cost may rise above the baseline, relative."""
    exact: bool = False
    """Fail on any changed format, too."""


@dataclass(frozen=True)
class Finding:
    """One check of the gate and its verdict."""

    name: str
    passed: bool
    message: str


@dataclass(frozen=True)
class LayerChange:
    """How one layer differs from the baseline: formats that changed, memory and multiply cost."""

    layer: str
    formats: tuple[tuple[str, tuple[int, int] | None, tuple[int, int] | None], ...]
    """``(kind, baseline format, this format)``; None where the tensor is missing on that side."""
    memory_bits: tuple[int | None, int | None]
    multiply_cost: tuple[int | None, int | None]

    def line(self) -> str:
        """``c3: W (2, 3) -> (3, 4); memory 1,234 -> 1,270 bits (+36)``."""
        parts = [f"{kind} {_fmt(before)} -> {_fmt(after)}" for kind, before, after in self.formats]
        base, now = self.memory_bits
        if base is None:
            return f"{self.layer}: not in the baseline (new layer)"
        if now is None:
            return f"{self.layer}: in the baseline but not in this result"
        memory = f"memory {base:,} -> {now:,} bits ({now - base:+,})"
        mult_base, mult_now = self.multiply_cost
        mult = (
            f", multiply cost {_change(mult_now, mult_base)}"
            if mult_base is not None and mult_now is not None and mult_base != mult_now
            else ""
        )
        return f"{self.layer}: {', '.join(parts)}; {memory}{mult}"


@dataclass(frozen=True)
class CheckOutcome:
    """The gate's verdict on one result: every check, the changed layers, and notes."""

    result: str
    baseline: str
    findings: tuple[Finding, ...]
    changes: tuple[LayerChange, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.findings)

    @property
    def failures(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.passed)

    def verdict(self) -> str:
        """``pass``, or ``FAIL: memory, formats`` (the failed checks)."""
        return "pass" if self.passed else "FAIL: " + ", ".join(f.name for f in self.failures)

    def lines(self) -> list[str]:
        """What the terminal shows: the verdict, each check, then the changed layers."""
        out = [f"check {self.result} against {self.baseline}: {'PASS' if self.passed else 'FAIL'}"]
        out += [f"  {'ok  ' if f.passed else 'FAIL'}  {f.name}: {f.message}" for f in self.findings]
        out += [f"  note: {note}" for note in self.notes]
        if self.changes:
            out.append("  layer by layer (layers that changed; baseline -> this result):")
            out += [f"    {change.line()}" for change in self.changes]
        return out


def compare(current: Snapshot, baseline: Snapshot, limits: Limits) -> CheckOutcome:
    """Check ``current`` against ``baseline`` under ``limits`` (the gate's whole logic)."""
    changes = _layer_changes(current, baseline)
    changed = sum(len(c.formats) for c in changes)
    notes = []
    if current.sha256 and baseline.sha256 and current.sha256 != baseline.sha256:
        notes.append("the model file differs from the baseline's (sha256); was it retrained?")
    if {layer.name for layer in current.layers} != {layer.name for layer in baseline.layers}:
        notes.append("the layers differ from the baseline's: a different model?")
    findings = (
        _loss_finding(current, baseline, limits),
        _cost_finding("memory", current.memory_bits / 8, baseline.memory_bits / 8, limits, "bytes"),
        _cost_finding("multiply cost", current.multiply_cost, baseline.multiply_cost, limits, ""),
        Finding(
            "formats",
            passed=not (limits.exact and changes),
            message=(
                f"identical to the baseline ({current.tensor_count} tensors)"
                if not changes
                else f"{changed} of {max(current.tensor_count, baseline.tensor_count)} tensors changed format"
                + ("" if limits.exact else " (allowed; --exact fails on any change)")
            ),
        ),
    )
    return CheckOutcome(current.source, baseline.source, findings, changes, tuple(notes))


def check(result: str | Path, baseline: str | Path, limits: Limits) -> CheckOutcome:
    """Read a run's result and a baseline, and compare them."""
    return compare(read_snapshot(result), read_snapshot(baseline), limits)


def _loss_finding(current: Snapshot, baseline: Snapshot, limits: Limits) -> Finding:
    """Held-out loss within the limit (the search loss when the run had no held-out set)."""
    name, loss, base = "held-out loss", current.held_out_loss, baseline.held_out_loss
    if loss is None:
        name, loss, base = "search loss (no held-out set)", current.search_loss, baseline.search_loss
    limit, why = (current.eps, "the run's eps") if limits.max_loss is None else (limits.max_loss, "max_loss")
    passed = loss <= limit + _LOSS_SLACK
    reference = f"; baseline {base:.3%}" if base is not None else ""
    shown = f"{loss:.3%}" + (f" {current.loss_uncertainty}" if current.loss_uncertainty else "")
    return Finding(name, passed, f"{shown} {'<=' if passed else '>'} {limit:.3%} ({why}){reference}")


def _uncertainty(accuracy: Mapping[str, Any]) -> str:
    """The interval and sample count formats.json records beside a loss (empty for files without)."""
    intervals = accuracy.get("intervals") or {}
    bounds, conf = intervals.get("quantized_loss"), intervals.get("confidence")
    if not bounds or conf is None:
        return ""
    return f"({conf:.0%} CI {bounds[0]:.3%} .. {bounds[1]:.3%}, n {accuracy.get('samples')})"


def _cost_finding(name: str, now: float, base: float, limits: Limits, unit: str) -> Finding:
    """A cost no more than ``tolerance`` above the baseline's."""
    passed = now <= base * (1.0 + limits.tolerance)
    return Finding(
        name,
        passed,
        f"{_change(now, base, unit)} (tolerance {limits.tolerance:.2%})",
    )


def _change(now: float, base: float, unit: str = "") -> str:
    """``15,234 bytes, +3.20% vs the baseline's 14,762``."""
    suffix = f" {unit}" if unit else ""
    if base == 0:
        return f"{now:,.0f}{suffix} (baseline 0)"
    return f"{now:,.0f}{suffix}, {now / base - 1:+.2%} vs the baseline's {base:,.0f}"


def _layer_changes(current: Snapshot, baseline: Snapshot) -> tuple[LayerChange, ...]:
    """The layers whose formats differ, in the result's order (then layers only the baseline has)."""
    before = {layer.name: layer for layer in baseline.layers}
    after = {layer.name: layer for layer in current.layers}
    order = [layer.name for layer in current.layers] + [n for n in before if n not in after]
    changes = []
    for name in order:
        old, new = before.get(name), after.get(name)
        old_formats = old.formats if old else {}
        new_formats = new.formats if new else {}
        diffs = tuple(
            (kind, old_formats.get(kind), new_formats.get(kind))
            for kind in TENSOR_KINDS
            if old_formats.get(kind) != new_formats.get(kind)
        )
        if diffs:
            changes.append(
                LayerChange(
                    name,
                    diffs,
                    (old.memory_bits if old else None, new.memory_bits if new else None),
                    (old.multiply_cost if old else None, new.multiply_cost if new else None),
                )
            )
    return tuple(changes)


def _fmt(fmt: tuple[int, int] | None) -> str:
    return "-" if fmt is None else f"({fmt[0]}, {fmt[1]})"


# --------------------------------------------------------------------------------------------------
# JUnit XML


@dataclass(frozen=True)
class Case:
    """One JUnit test case: passed, failed (a regression), an error (it could not run) or skipped."""

    classname: str
    name: str
    failure: str | None = None
    error: str | None = None
    skipped: str | None = None
    output: str = ""
    seconds: float = 0.0


def outcome_cases(classname: str, outcome: CheckOutcome) -> list[Case]:
    """One case per check of the gate; the layer-by-layer changes go with the formats case."""
    details = "\n".join(outcome.lines())
    return [
        Case(
            classname,
            finding.name,
            failure=None if finding.passed else finding.message,
            output=details if (finding.name == "formats" or not finding.passed) else finding.message,
        )
        for finding in outcome.findings
    ]


def junit_xml(suite: str, cases: Sequence[Case], properties: Mapping[str, Any] | None = None) -> str:
    """A JUnit XML report (one ``testsuite``) of ``cases``, as CI systems read it."""
    failures = sum(c.failure is not None for c in cases)
    errors = sum(c.error is not None for c in cases)
    skipped = sum(c.skipped is not None for c in cases)
    total_time = f"{sum(c.seconds for c in cases):.3f}"
    root = ET.Element(
        "testsuites",
        name="optsearch",
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        time=total_time,
    )
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=total_time,
    )
    if properties:
        props = ET.SubElement(node, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=str(key), value=str(value))
    for case in cases:
        element = ET.SubElement(
            node, "testcase", classname=case.classname, name=case.name, time=f"{case.seconds:.3f}"
        )
        if case.failure is not None:
            ET.SubElement(element, "failure", message=case.failure, type="regression").text = case.output
        elif case.error is not None:
            ET.SubElement(element, "error", message=case.error, type="error").text = case.output
        elif case.skipped is not None:
            ET.SubElement(element, "skipped", message=case.skipped)
        elif case.output:
            ET.SubElement(element, "system-out").text = case.output
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)  # mkstemp makes it private; a report is an ordinary file
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)
