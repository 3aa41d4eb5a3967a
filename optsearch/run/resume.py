"""The work folder of a run in progress, read back for ``optsearch run --resume``. No Keras.

While a run is in progress its work folder (``<out>.partial``, see ``outdir``) holds:

- ``request.json``: the fingerprint of the run (settings, model and data sha256, versions);
- ``decisions.jsonl``: one JSON line per decided tensor, flushed and fsync'd as it is written;
- ``search_log.jsonl``: one JSON line per evaluation.

Resuming applies the recorded decisions (they are not searched again) and searches the tensor that
was in progress from its beginning. The search is deterministic given the decided formats, so the
result is the one an uninterrupted run gives. A last line cut short by ``kill -9`` is ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from optsearch.core.errors import OptsearchError
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.methods.opt_search import TensorDecision

REQUEST_FILE = "request.json"
DECISIONS_FILE = "decisions.jsonl"
LOG_FILE = "search_log.jsonl"


def decision_to_dict(decision: TensorDecision) -> dict[str, Any]:
    """A decision as JSON data (floats round-trip exactly through ``json``)."""
    return {
        "tensor": str(decision.tensor),
        "position": decision.position,
        "eps": decision.eps,
        "fmt": [decision.fmt.bw, decision.fmt.f],
        "loss": decision.loss,
        "bw0": decision.bw0,
        "start": [decision.start.bw, decision.start.f],
        "diagonal": [decision.diagonal.bw, decision.diagonal.f],
        "diagonal_loss": decision.diagonal_loss,
        "local": [decision.local.bw, decision.local.f],
        "local_loss": decision.local_loss,
        "rule": decision.rule,
        "evaluations": decision.evaluations,
        "bound": decision.bound,
    }


def decision_from_dict(data: Mapping[str, Any]) -> TensorDecision:
    """The decision ``decision_to_dict`` wrote."""

    def fmt(key: str) -> Format:
        bw, f = data[key]
        return Format(int(bw), int(f))

    return TensorDecision(
        tensor=TensorId.parse(str(data["tensor"])),
        position=int(data["position"]),
        eps=float(data["eps"]),
        fmt=fmt("fmt"),
        loss=float(data["loss"]),
        bw0=int(data["bw0"]),
        start=fmt("start"),
        diagonal=fmt("diagonal"),
        diagonal_loss=float(data["diagonal_loss"]),
        local=fmt("local"),
        local_loss=float(data["local_loss"]),
        rule=str(data["rule"]),
        evaluations=int(data["evaluations"]),
        bound=None if data.get("bound") is None else float(data["bound"]),
    )


def append_line(stream: IO[str], data: Mapping[str, Any], *, sync: bool = True) -> None:
    """One JSON line, flushed (and fsync'd with ``sync``) so that it survives a kill."""
    stream.write(json.dumps(data) + "\n")
    stream.flush()
    if sync:
        os.fsync(stream.fileno())


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a ``.jsonl`` file; a last line cut short (by ``kill -9``) is dropped."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is incomplete (or empty)
    out = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as err:
            if number == len(complete):  # written in full but its newline not yet: still cut short
                break
            raise OptsearchError(
                f"{path}:{number} is not a JSON line ({err}); the work folder is damaged"
            ) from err
        if isinstance(value, dict):
            out.append(value)
    return out


def rewrite_lines(path: Path, lines: Sequence[Mapping[str, Any]]) -> None:
    """Replace ``path`` with exactly ``lines`` (written to a temporary file, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as stream:
        for line in lines:
            stream.write(json.dumps(line) + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


def write_request(work: Path, fingerprint: Mapping[str, Any]) -> None:
    """``request.json``: what the run was asked to do, compared on ``--resume``."""
    tmp = work / (REQUEST_FILE + ".tmp")
    tmp.write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, work / REQUEST_FILE)


def read_request(work: Path) -> dict[str, Any]:
    """The recorded fingerprint; OptsearchError when it is missing or unreadable."""
    path = work / REQUEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OptsearchError(
            f"cannot resume: {path} is missing or unreadable ({type(err).__name__}); "
            "pass --overwrite (without --resume) to discard the interrupted run and start again"
        ) from err
    if not isinstance(data, dict):
        raise OptsearchError(
            f"cannot resume: {path} is not a run fingerprint; pass --overwrite to start again"
        )
    return data


def fingerprint_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Every leaf that differs, as ``settings.eps 0.02 in the interrupted run, 0.01 now``."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            out.append(f"{path} {a!r} in the interrupted run, {b!r} now")

    walk(json.loads(json.dumps(recorded)), json.loads(json.dumps(current)), "")
    return out


def load_decisions(
    work: Path, plan: Sequence[TensorId]
) -> tuple[dict[TensorId, TensorDecision], list[str], float]:
    """The recorded decisions (in search order), the log notes that came with them, and the wall
    seconds they took in the runs that made them (so a resumed run reports the whole search's time,
    less the tensor that was in progress when it stopped).

    Only a prefix of the search plan can have been decided; anything else means the folder does
    not belong to this run.
    """
    decided: dict[TensorId, TensorDecision] = {}
    notes: list[str] = []
    seconds = 0.0
    path = work / DECISIONS_FILE
    lines = read_lines(path)
    rewrite_lines(path, lines)  # without a line cut short, so the next one starts on its own line
    for index, line in enumerate(lines):
        try:
            decision = decision_from_dict(line["decision"])
            line_notes = [str(n) for n in line.get("notes", [])]
            seconds += float(line.get("seconds", 0.0))  # 0 for lines written before it was recorded
        except (KeyError, TypeError, ValueError) as err:
            raise OptsearchError(
                f"{path}: line {index + 1} is not a decision ({err}); the work folder is damaged"
            ) from err
        if index >= len(plan) or plan[index] != decision.tensor:
            raise OptsearchError(
                f"{path}: decision {index + 1} is for {decision.tensor}, which this run does not search "
                "at that point; pass --overwrite (without --resume) to start again"
            )
        decided[decision.tensor] = decision
        notes.extend(line_notes)
    return decided, notes, seconds


def trim_log(work: Path, decided: Mapping[TensorId, TensorDecision]) -> None:
    """Keep the evaluation lines of the decided tensors only: the tensor in progress is searched again."""
    path = work / LOG_FILE
    names = {str(t) for t in decided}
    rewrite_lines(path, [line for line in read_lines(path) if line.get("tensor") in names])
