"""PNG plots of a ``RunResult`` (matplotlib, headless): bitwidths per layer and the loss step by step."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from optsearch.core.tensors import KIND_NAMES, TENSOR_KINDS
from optsearch.results.result import RunResult


def plot_bitwidths(result: RunResult, path: Path) -> None:
    """Bits per layer for weights, biases and activations, side by side (like the paper's Fig. 11b)."""
    names = [layer.name for layer in result.layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 4))
    width = 0.27
    for i, kind in enumerate(TENSOR_KINDS):
        xs = [j + (i - 1) * width for j, layer in enumerate(result.layers) if kind in layer.tensors]
        bits = [layer.tensors[kind].bw for layer in result.layers if kind in layer.tensors]
        ax.bar(xs, bits, width, label=KIND_NAMES[kind])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel("bitwidth BW")
    ax.set_title(f"{result.model.name}: bits per layer (eps {result.eps:.2%})")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss_steps(result: RunResult, path: Path) -> None:
    """The relative loss after each tensor is quantized, in search order (like Fig. 5b / 11a)."""
    losses = [100 * step["loss"] for step in result.steps]
    labels = [step["tensor"] for step in result.steps]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(losses) + 2), 4))
    ax.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3)
    ax.axhline(100 * result.eps, color="red", linestyle="--", label="budget eps")
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=90, fontsize=6)
    ax.set_ylabel("accuracy loss da (%)")
    ax.set_xlabel("tensors quantized so far (search order)")
    ax.set_title(f"{result.model.name}: loss as the network is quantized")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto(result: RunResult, path: Path) -> None:
    """``--method pareto``: the predicted front (loss against memory saving vs 8-bit), the front points
    the verification measured, and the final network, with the budget."""
    p = result.pareto
    if p is None:
        return
    base = result.costs["uniform8"].memory_bits_total
    saving = [100 * (1 - point["memory_bits"] / base) for point in p.front]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if p.scale is not None:
        predicted = [100 * point["predicted_loss"] for point in p.front]
        ax.plot(saving, predicted, marker=".", label="predicted front (curves, knapsack)")
    checked = [(s, pt["measured_statistic"]) for s, pt in zip(saving, p.front, strict=True)]
    checked = [(s, 100 * m) for s, m in checked if m is not None]
    if checked:
        ax.scatter(
            *zip(*checked, strict=True),
            marker="x",
            color="black",
            zorder=3,
            label="front point measured (acceptance statistic)",
        )
    ax.scatter(
        [100 * result.savings("uniform8")["memory"]],
        [100 * result.accuracy["search"].quantized_loss],
        color="red",
        zorder=4,
        label="final network (loss on the search set)",
    )
    ax.axhline(100 * result.eps, color="grey", linestyle="--", label="budget eps")
    ax.set_xlabel("memory saving vs uniform 8-bit (%)")
    ax.set_ylabel("relative accuracy loss (%)")
    ax.set_title(f"{result.model.name}: the front of --method pareto ({p.objective})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
