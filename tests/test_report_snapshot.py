"""A snapshot of report.md of a tiny run (larq's ``snap_models_test.py`` style): any change to what the
report says, or how, shows up here as a diff against ``tests/snapshots/report_tiny.md``.

The run's temporary path, the model file's sha256 and the seconds are masked. After an intended
change of the report, rewrite the snapshot with ``OPTSEARCH_UPDATE_SNAPSHOTS=1 pytest
tests/test_report_snapshot.py`` and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from click.testing import CliRunner

from optsearch.cli.main import cli

SNAPSHOT = Path(__file__).parent / "snapshots" / "report_tiny.md"


def masked(text: str, model: Path) -> str:
    """The report without what differs between two identical runs (paths, hashes, seconds)."""
    text = text.replace(str(model), "<model>")
    text = re.sub(r"sha256 `[0-9a-f]{16}\.\.\.`", "sha256 `<sha256>...`", text)
    text = re.sub(r"\(sha256 `[^`]*`\)", "(sha256 `<sha256>`)", text)
    return re.sub(r"[0-9.]+ s in total", "<seconds> s in total", text)


def test_report_of_a_tiny_run_matches_its_snapshot(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "result"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(files["model"]),
            "--data",
            str(files["data"]),
            "--eps",
            "0.02",
            "--out",
            str(out),
            "--criterion",
            "paper",
            "--method",
            "paper",
        ],
    )
    assert result.exit_code == 0, result.output
    report = masked((out / "report.md").read_text(), files["model"])
    data_path = str(files["data"])
    report = report.replace(data_path, "<data>")
    if os.environ.get("OPTSEARCH_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(report)
    assert report == SNAPSHOT.read_text(), (
        "report.md changed; if intended, rerun with OPTSEARCH_UPDATE_SNAPSHOTS=1 and review the diff"
    )
