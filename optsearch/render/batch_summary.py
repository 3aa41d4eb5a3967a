"""A batch's summary, rendered from one row per job: summary.md, summary.csv and the Pareto plot.

Every number comes from the job's ``RunResult`` (its formats.json); nothing is measured here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from optsearch.results.result import Accuracy, RunResult

CSV_COLUMNS = (
    "job",
    "status",
    "folder",
    "model",
    "data",
    "eps",
    "varied",
    "search_loss",
    "held_out_loss",
    "held_out_loss_low",
    "held_out_loss_high",
    "held_out_loss_upper_bound",
    "held_out_samples",
    "confidence",
    "held_out_budget",
    "memory_bits",
    "memory_bytes",
    "multiply_cost",
    "bops",
    "memory_saving_vs_uniform8",
    "multiply_saving_vs_uniform8",
    "memory_saving_vs_float32",
    "multiply_saving_vs_float32",
    "evaluations",
    "seconds",
    "check",
    "message",
)


@dataclass(frozen=True)
class Row:
    """One job of a batch as the summary shows it."""

    job: str
    status: str
    """``done``, ``up to date``, ``failed``, ``not run`` (interrupted) or ``not selected`` (``--only``)."""
    folder: str
    model: str
    data: str
    eps: float
    varied: str
    """The job's grid values, e.g. ``eps=0.005, allocation=linear``."""
    result: RunResult | None
    seconds: float | None
    check: str
    """``pass``, ``FAIL: memory``, ``error`` or ``-`` (no check)."""
    message: str = ""
    details: tuple[str, ...] = ()
    """The gate's report, line by line."""

    @property
    def held_out_loss(self) -> float | None:
        if self.result is None or "held_out" not in self.result.accuracy:
            return None
        return self.result.accuracy["held_out"].quantized_loss

    @property
    def search_loss(self) -> float | None:
        return None if self.result is None else self.result.accuracy["search"].quantized_loss

    @property
    def held_out(self) -> Accuracy | None:
        return None if self.result is None else self.result.accuracy.get("held_out")

    @property
    def confidence(self) -> float | None:
        return None if self.result is None else self.result.settings.search.confidence

    @property
    def held_out_interval(self) -> tuple[float, float] | None:
        """The held-out loss's two-sided interval at the run's confidence (None without counts)."""
        held, conf = self.held_out, self.confidence
        return None if held is None or conf is None else held.loss_interval(conf)

    @property
    def held_out_bound(self) -> float | None:
        held, conf = self.held_out, self.confidence
        return None if held is None or conf is None else held.loss_bound(conf)

    @property
    def budget(self) -> str:
        """``holds``, ``within, not certified`` or ``over`` on the held-out part; empty without one."""
        held, conf = self.held_out, self.confidence
        if held is None or conf is None or self.result is None or not held.counted:
            return ""
        return held.budget_verdict(self.result.eps, conf)


def summary_csv(rows: Sequence[Row]) -> str:
    """summary.csv: one row per job, raw numbers (fractions, bits, seconds)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        r = row.result
        quantized = r.costs["quantized"] if r else None
        vs8 = r.savings("uniform8") if r else {}
        vs32 = r.savings("float32") if r else {}
        writer.writerow(
            [
                row.job,
                row.status,
                row.folder,
                row.model,
                row.data,
                row.eps,
                row.varied,
                _raw(row.search_loss),
                _raw(row.held_out_loss),
                _raw(row.held_out_interval[0] if row.held_out_interval else None),
                _raw(row.held_out_interval[1] if row.held_out_interval else None),
                _raw(row.held_out_bound),
                _raw(row.held_out.samples if row.held_out else None),
                _raw(row.confidence),
                row.budget,
                _raw(quantized.memory_bits_total if quantized else None),
                _raw(quantized.memory_bytes if quantized else None),
                _raw(quantized.multiply_cost if quantized else None),
                _raw(quantized.bops if quantized else None),
                _raw(vs8.get("memory")),
                _raw(vs8.get("multiply_cost")),
                _raw(vs32.get("memory")),
                _raw(vs32.get("multiply_cost")),
                _raw(r.evaluations if r else None),
                _raw(None if row.seconds is None else round(row.seconds, 1)),
                row.check,
                row.message,
            ]
        )
    return out.getvalue()


def summary_markdown(title: str, source: str, rows: Sequence[Row]) -> str:
    """summary.md: the headline numbers of every job, then the problems and the checks."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    checked = [row for row in rows if row.check != "-"]
    passed = sum(row.check == "pass" for row in checked)
    lines = [
        f"# Batch summary: {title}",
        "",
        f"From `{source}`. {len(rows)} job{'s' if len(rows) != 1 else ''}: {tally}."
        + (f" Checks: {passed} of {len(checked)} passed." if checked else ""),
        "",
        "Losses are relative top-1 accuracy losses (eq. 6), the held-out one with its two-sided "
        "interval at the run's confidence and its sample count; budget says whether eps holds on the "
        "held-out part at that confidence (its upper bound within eps). Memory is the found formats' "
        "weights, biases and activations per sample; savings are how much less than the uniform 8-bit "
        "and float32 networks.",
        "",
        "| job | status | eps | search loss | held-out loss | budget | memory | memory saved vs 8-bit "
        "| vs float32 | multiply cost saved vs 8-bit | evaluations | time | check |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        r = row.result
        vs8 = r.savings("uniform8") if r else {}
        vs32 = r.savings("float32") if r else {}
        cells = [
            f"`{row.job}`",
            row.status,
            _pct(row.eps),
            _pct(row.search_loss),
            _held_out_cell(row),
            row.budget,
            _bytes(r.costs["quantized"].memory_bytes) if r else "",
            _pct(vs8.get("memory")),
            _pct(vs32.get("memory")),
            _pct(vs8.get("multiply_cost")),
            f"{r.evaluations:,}" if r else "",
            "" if row.seconds is None else f"{row.seconds:,.0f} s",
            row.check,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    problems = [row for row in rows if row.message]
    if problems:
        lines += ["", "## Problems", ""]
        lines += [f"- `{row.job}` ({row.status}): {_one_line(row.message)}" for row in problems]
    reports = [row for row in rows if row.details]
    if reports:
        lines += ["", "## Checks", ""]
        for row in reports:
            lines += [f"`{row.job}`: {row.check}", "", "```text", *row.details, "```", ""]
    varied = [row for row in rows if row.varied]
    if varied:
        lines += ["", "## Grid values", ""]
        lines += [f"- `{row.job}`: {row.varied} (in `{row.folder}`)" for row in varied]
    return "\n".join(lines).rstrip() + "\n"


def plot_pareto(rows: Sequence[Row], path: Path) -> bool:
    """Memory against held-out loss, one series per model and data, each point labelled with its grid
    values; the Pareto front (less memory for no more loss) joined by a line. False if nothing to plot."""
    points = [row for row in rows if row.result is not None]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[tuple[float, float, str]]] = {}
    for row in points:
        loss = row.held_out_loss if row.held_out_loss is not None else row.search_loss
        assert row.result is not None and loss is not None
        label = f"{row.model} on {row.data}"
        groups.setdefault(label, []).append(
            (100 * loss, row.result.costs["quantized"].memory_bytes / 1024, row.varied or row.job)
        )
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, values in groups.items():
        xs, ys, _ = zip(*values, strict=True)
        scatter = ax.scatter(xs, ys, label=label, zorder=3)
        front = pareto_front([(x, y) for x, y, _ in values])
        ax.plot(
            [p[0] for p in front],
            [p[1] for p in front],
            color=scatter.get_facecolor()[0],
            alpha=0.6,
        )
        for x, y, name in values:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("held-out loss (%)")
    ax.set_ylabel("memory of the found formats (KiB)")
    ax.set_title("memory vs held-out loss (Pareto front joined)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both loss (x) and memory (y), by increasing loss."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def _held_out_cell(row: Row) -> str:
    """``0.62% (-0.10% .. 1.31%, n 5000)``: the held-out loss with its interval and sample count."""
    if row.held_out_loss is None:
        return ""
    interval, held = row.held_out_interval, row.held_out
    if interval is None or held is None:
        return _pct(row.held_out_loss)
    return f"{_pct(row.held_out_loss)} ({_pct(interval[0])} .. {_pct(interval[1])}, n {held.samples})"


def _raw(value: float | int | None) -> str:
    return "" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _bytes(value: float) -> str:
    return f"{value / 1024:,.1f} KiB" if value >= 1024 else f"{value:,.0f} B"


def _one_line(text: str) -> str:
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())
