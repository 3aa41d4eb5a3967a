"""scripts/reproduce_paper.py end to end on a tiny stand-in for the zoo model: it runs, keeps the
outputs, skips what is done, and renders docs/results.md with the finished rows filled in."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import keras
import numpy as np
import pytest

L = keras.layers
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_paper.py"


def _script(root: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module, its folders moved under ``root``."""
    spec = importlib.util.spec_from_file_location("reproduce_paper_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    for name, path in {
        "MODELS": root / "models",
        "RESULTS_DIR": root / "docs" / "paper",
        "RESULTS_MD": root / "docs" / "results.md",
        "PARETO_PNG": root / "docs" / "pareto.png",
        "WORK_DIR": root / "runs" / "paper",
    }.items():
        monkeypatch.setattr(module, name, path)
    return module


def _tiny_zoo(root: Path) -> Path:
    """A small conv net saved as models/sequential_mnist.keras, and an mnist.npz its labels fit."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Rescaling(1 / 255, name="rescale"),
            L.Conv2D(4, 5, strides=3, activation="relu", name="c1"),
            L.BatchNormalization(name="bn1"),
            L.GlobalMaxPooling2D(name="pool"),
            L.Dense(10, name="logits"),
            L.Softmax(name="softmax"),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(240, 28, 28, 1), dtype=np.uint8)
    y = np.argmax(model.predict(x.astype(np.float32), verbose=0), axis=1)
    y[:12] = (y[:12] + 1) % 10  # a few wrong labels, so the float model is not perfect
    (root / "models").mkdir(parents=True)
    model.save(root / "models" / "sequential_mnist.keras")
    data = root / "data"
    data.mkdir()
    np.savez_compressed(data / "mnist.npz", x_train=x[:40], y_train=y[:40], x_test=x, y_test=y)
    return data


def test_runs_skips_done_and_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script(tmp_path, monkeypatch)
    data = _tiny_zoo(tmp_path)
    runs = ["paper-sequential_mnist", "split-sequential_mnist"]

    assert script.main(["--only", *runs, "--data-dir", str(data)]) == 0
    for name in runs:
        folder = tmp_path / "docs" / "paper" / name
        verified = [script.VERIFY_FILE] if name.startswith("split-") else []
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [*script.FILES_KEPT, "run.json", script.TIMING_FILE, *verified]
        )
        timing = json.loads((folder / script.TIMING_FILE).read_text())
        assert timing["wall_seconds"] > 0 and timing["cpu_seconds"] > 0 and timing["mean_load_1min"] >= 0
    results = (tmp_path / "docs" / "results.md").read_text()
    plan = script.plan()
    assert f"Finished runs: 2 of {len(plan)}" in results
    assert "| sequential_mnist | *not yet run*" not in results  # both of its rows are measured
    assert "| sequential_fashion_mnist | *not yet run*" in results
    assert "Measured: W " in results and "Paper (spec §9): weights 2-5 bits" in results
    assert "Against the paper, over the 1 finished model:" in results
    assert re.search(
        r"^- Evaluations, sequential: \d+, [\d.]+ per tensor; paper: 670-710,", results, re.MULTILINE
    )
    assert "- Evaluations, branched" not in results  # no branched model has run
    # The tiny model's saving is far outside the paper's range: where its memory goes is spelled out.
    assert re.search(
        r"^- sequential_mnist saves -?[\d.]+%, (below|above) the paper's .*activations are", results, re.M
    )
    # The runs the ablations share with these two are measured too: eps 1% of the sweep, and the
    # linear scheme (the paper's allocation).
    assert re.search(r"^\| 1\.00% \| \d", results, re.MULTILINE)
    assert re.search(r"^\| paper \(default\) = linear \| \d", results, re.MULTILINE)
    assert "| linear | *not yet run*" not in results
    # The split run's held-out half is verified on the exact fixed-point network, and tabled.
    verified = json.loads((tmp_path / "docs" / "paper" / runs[1] / script.VERIFY_FILE).read_text())
    held_out = verified["samples"]
    exact = verified["end_to_end"]["correct"][0] / held_out
    split_row = next(
        line for line in results.splitlines() if line.startswith(f"| sequential_mnist | {240 - held_out} |")
    )
    cells = [cell.strip() for cell in split_row.split("|")[1:-1]]
    float_acc = float(cells[4].rstrip("%")) / 100
    assert cells[-2:] == [f"{exact:.2%}", f"{(float_acc - exact) / float_acc:.2%}"]
    # Summed up under the table: the budget kept or not, on both networks, and the whole-set run beside.
    assert "Over the 1 finished split:" in results
    assert re.search(r"^- Held-out loss within the budget \(eps 1%\): [01] of 1", results, re.M)
    assert re.search(
        r"^- Held-out loss of the exact network within the budget: [01] of 1 verified", results, re.M
    )
    assert "- `optsearch verify` on the held-out halves: OK on 1 of 1 (layer by layer" in results
    assert re.search(
        r"^- Memory below 8-bit, .* on the whole: sequential_mnist -?[\d.]+% / -?[\d.]+%", results, re.M
    )
    row = next(line for line in results.splitlines() if line.startswith("| sequential_mnist | 9"))
    assert re.search(r"\| \d+ s \(load \d+\.\d\) \|$", row), row  # search time with the load beside it

    # Done runs are skipped: a second call leaves their outputs untouched.
    stamp = (tmp_path / "docs" / "paper" / runs[0] / "formats.json").stat().st_mtime_ns
    assert script.main(["--only", *runs, "--data-dir", str(data)]) == 0
    assert (tmp_path / "docs" / "paper" / runs[0] / "formats.json").stat().st_mtime_ns == stamp
    # A changed definition is not done any more.
    run_json = tmp_path / "docs" / "paper" / runs[0] / "run.json"
    run_json.write_text(run_json.read_text().replace('"eps": 0.01', '"eps": 0.02'))
    assert not script.is_done(next(r for r in plan if r.name == runs[0]))


def test_a_failed_search_is_kept_as_a_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The paper reports that A -> W -> B fails; a run whose search finds no format is that result,
    shown in results.md with its error and not run again."""
    script = _script(tmp_path, monkeypatch)
    data = _tiny_zoo(tmp_path)
    calls: list[str] = []

    def fail(run: object, data_dir: str, log: object) -> None:
        calls.append(run.name)  # type: ignore[attr-defined]
        raise script.SearchError("layer 'c1', weights: no acceptable format even at (24, 25)")

    monkeypatch.setattr(script, "execute", fail)
    assert script.main(["--only", "order-AWB", "--data-dir", str(data)]) == 0
    assert calls == ["order-AWB", "order-AWB-budgets"]
    run = next(r for r in script.plan() if r.name == "order-AWB")
    assert script.failure(run)["error"].startswith("SearchError: layer 'c1'")
    assert script.finished(run) and not script.is_done(run)
    results = (tmp_path / "docs" / "results.md").read_text()
    assert "| A -> W -> B | **search failed** after " in results
    assert "- A -> W -> B: `SearchError: layer 'c1', weights: no acceptable format" in results
    assert "(2 ended in a failed search, a result too)" in results
    assert "order-AWB," not in results.split("not yet run**: ", 1)[1].splitlines()[0]
    # Finished: not run again. Any other error is not a result: the run stays to do.
    assert script.main(["--only", "order-AWB", "--data-dir", str(data)]) == 0
    assert len(calls) == 2

    def crash(run: object, data_dir: str, log: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(script, "execute", crash)
    assert script.main(["--only", "order-reverse", "--data-dir", str(data)]) == 0
    assert not script.finished(next(r for r in script.plan() if r.name == "order-reverse"))


def test_budgets_reach_the_search_and_old_definitions_still_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optsearch.core.allocation import PAPER_ALLOCATION, Allocation

    script = _script(tmp_path, monkeypatch)
    runs = {r.name: r for r in script.plan()}
    request = script.request_for(runs["order-AWB-budgets"], str(tmp_path), tmp_path / "work")
    assert request.search.type_order == ("A", "W", "B")
    assert request.search.allocation == {
        "A": Allocation("linear", 0.0, 0.5),
        "W": Allocation("linear", 0.5, 1.0),
        "B": Allocation("constant", 1.0, 1.0),
    }
    assert script.request_for(runs["order-AWB"], str(tmp_path), tmp_path / "w2").search.allocation == dict(
        PAPER_ALLOCATION
    )
    # run.json of a run without budgets has no budgets key: runs stored before the field existed match.
    assert "budgets" not in script.definition(runs["order-reverse"])
    assert script.definition(runs["order-AWB-budgets"])["budgets"][0] == ["A", "linear", 0.0, 0.5]


def test_first_difference_follows_the_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two searches of one model part at the first tensor, in search order, whose bitwidths differ."""
    from types import SimpleNamespace as NS

    script = _script(tmp_path, monkeypatch)

    def result(bits: dict[str, tuple[int, int, int]]) -> NS:
        return NS(
            layers=[
                NS(name=n, tensors={t: NS(bw=b) for t, b in zip("WBA", bw, strict=True)})
                for n, bw in bits.items()
            ]
        )

    a = result({"c1": (4, 1, 5), "c2": (3, 1, 4)})
    same_w = result({"c1": (4, 2, 5), "c2": (3, 1, 6)})
    run = next(r for r in script.plan() if r.name == "split-sequential_mnist")  # W -> B -> A
    assert script.first_difference(run, a, same_w) == " (first difference: c1 B, 1 / 2 bits, tensor 3 of 6)"
    awb = script.PaperRun("x", "order", "m", "mnist", type_order="AWB")
    assert script.first_difference(awb, a, same_w) == " (first difference: c2 A, 4 / 6 bits, tensor 2 of 6)"
    assert script.first_difference(run, a, a) == ""
