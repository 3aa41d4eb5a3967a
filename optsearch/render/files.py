"""The files of a result folder rendered from a ``RunResult``: formats.csv, report.md and the plots."""

from __future__ import annotations

from pathlib import Path

from optsearch.render.plots import plot_bitwidths, plot_loss_steps, plot_pareto
from optsearch.render.report import formats_csv, pareto_csv, report_markdown
from optsearch.results.folder import (
    BITWIDTHS_PLOT,
    CSV_FILE,
    LOSS_PLOT,
    PARETO_CSV,
    PARETO_PLOT,
    REPORT_FILE,
)
from optsearch.results.result import RunResult


def write_rendered(result: RunResult, folder: Path) -> None:
    """formats.csv, report.md and the plots of ``result`` into ``folder`` (formats.json is the
    result folder's own: ``ResultFolder.write_json``)."""
    (folder / CSV_FILE).write_text(formats_csv(result))
    (folder / REPORT_FILE).write_text(report_markdown(result))
    plot_bitwidths(result, folder / BITWIDTHS_PLOT)
    plot_loss_steps(result, folder / LOSS_PLOT)
    front = pareto_csv(result)
    if front is not None:
        (folder / PARETO_CSV).write_text(front)
        plot_pareto(result, folder / PARETO_PLOT)
