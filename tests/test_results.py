"""One result shape: ``RunResult`` and ``RunSettings`` round-trip through JSON losslessly, and every
formats.json written by optsearch 0.1.0 (the paper runs in docs/paper/) reads back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optsearch.core.allocation import SCHEMES, Allocation
from optsearch.methods.opt_search import SearchSettings
from optsearch.results.folder import ResultError, ResultFolder
from optsearch.settings import DataSettings, RunSettings

ROOT = Path(__file__).resolve().parents[1]
STORED = sorted((ROOT / "docs" / "paper").glob("*/formats.json"))


@pytest.mark.parametrize("path", STORED, ids=[p.parent.name for p in STORED])
def test_formats_json_of_0_1_0_reads_back_byte_for_byte(path: Path) -> None:
    data = json.loads(path.read_text())
    result = ResultFolder.at(path.parent).read()
    again = result.to_dict()
    # 0.1.0 searched with Alg. 2's own acceptance test and no certification; the settings now name
    # them. Nothing else differs.
    added = tuple(
        again["settings"].pop(key)
        for key in ("criterion", "confidence", "certify_fraction", "method", "warm_start")
    )
    assert added == ("paper", 0.95, 0.0, "paper", "none")
    assert json.dumps(again, indent=2) == json.dumps(data, indent=2)
    assert result.eps == data["settings"]["eps"]
    assert str(result.settings.model) == data["model"]["path"]


def test_the_stored_runs_are_there() -> None:
    assert len(STORED) >= 20


kinds = st.sampled_from(["W", "B", "A"])
allocations = st.builds(
    Allocation,
    st.sampled_from(SCHEMES),
    st.floats(0.0, 0.5, allow_nan=False),
    st.floats(0.5, 1.0, allow_nan=False),
)


@given(
    eps=st.floats(0.0001, 0.5),
    independent=st.booleans(),
    bw0=st.tuples(st.integers(2, 24), st.integers(2, 24), st.integers(2, 24)),
    order=st.permutations(["W", "B", "A"]),
    rules=st.tuples(allocations, allocations, allocations),
    fraction=st.floats(0.01, 1.0),
    seed=st.integers(0, 10_000),
    resize=st.none() | st.tuples(st.integers(1, 512), st.integers(1, 512)),
    scale=st.none() | st.floats(1e-6, 10.0),
    fold=st.sampled_from(["off", "exact", "all"]),
    batch=st.integers(1, 4096),
)
def test_run_settings_round_trip(
    eps: float,
    independent: bool,
    bw0: tuple[int, int, int],
    order: list[str],
    rules: tuple[Allocation, Allocation, Allocation],
    fraction: float,
    seed: int,
    resize: tuple[int, int] | None,
    scale: float | None,
    fold: str,
    batch: int,
) -> None:
    settings = RunSettings(
        model=Path("models/m.keras"),
        data=DataSettings("data.npz", scale, resize, fraction, seed),
        search=SearchSettings(
            eps=eps,
            independent=independent,
            bw0=dict(zip("WBA", bw0, strict=True)),  # type: ignore[arg-type]
            type_order=tuple(order),  # type: ignore[arg-type]
            allocation=dict(zip("WBA", rules, strict=True)),  # type: ignore[arg-type]
        ),
        fold_bn=fold,  # type: ignore[arg-type]
        batch_size=batch,
    )
    recorded = json.loads(json.dumps(settings.recorded()))
    data = json.loads(json.dumps({**settings.data.recorded()}))
    back = RunSettings.from_recorded({"path": str(settings.model)}, data, recorded)
    assert back == settings
    assert back.differences(settings) == []


def test_differences_name_what_changed() -> None:
    base = RunSettings(Path("m.keras"), DataSettings("d.npz"))
    other = base.with_search(eps=0.02)
    assert other.differences(base) == ["eps 0.01 in the result, 0.02 here"]
    assert RunSettings(Path("m.keras"), DataSettings("d.npz"), batch_size=7).differences(base) == []


def test_a_folder_without_a_result_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ResultError, match=r"has no formats\.json"):
        ResultFolder.at(tmp_path).read()
    (tmp_path / "formats.json").write_text("{}")
    with pytest.raises(ResultError, match=r"not a formats\.json written by `optsearch run`"):
        ResultFolder.at(tmp_path).read()
