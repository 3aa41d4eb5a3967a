"""The settings schema: one declaration for CLI and YAML, errors with file and line, grids, fuzzing."""

from __future__ import annotations

import string
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from optsearch.cli.main import cli
from optsearch.config.schema import (
    CHECK_SETTINGS,
    DEFAULTS,
    RUN_SETTINGS,
    SETTINGS,
    BatchConfig,
    ConfigError,
    RunFile,
    check_batch_document,
    check_run_document,
    check_section_document,
    is_grid,
    merge_run,
    parse_overrides,
    schema_table,
    search_settings,
)
from optsearch.config.yamlfile import Document, parse_yaml
from optsearch.methods.opt_search import INDEPENDENT_BW0, SearchSettings


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _run_file(text: str) -> RunFile:
    return check_run_document(parse_yaml(text, "job.yaml"))


def _batch(text: str, overrides: dict[str, object] | None = None) -> BatchConfig:
    return check_batch_document(parse_yaml(text, "zoo.yaml"), overrides)


def _error(text: str, batch: bool = False) -> str:
    with pytest.raises(ConfigError) as caught:
        _batch(text) if batch else _run_file(text)
    return str(caught.value)


# --------------------------------------------------------------------------------------------------
# One schema for both


def test_run_options_are_the_schema() -> None:
    """Every setting is a parameter of `run` with the schema's default, flag and range: nothing to drift."""
    params = {p.name: p for p in cli.commands["run"].params}
    assert set(params) == {s.param for s in RUN_SETTINGS} | {"config_file"}
    for setting in RUN_SETTINGS:
        param = params[setting.param]
        if not setting.argument:
            assert param.default == (() if setting.multiple else setting.default), setting.name
            assert setting.flag in param.opts, setting.name
        for value, ptype in zip(setting.values, getattr(param.type, "types", [param.type]), strict=True):
            if isinstance(ptype, click.types._NumberRangeBase):
                assert (ptype.min, ptype.max, ptype.min_open, ptype.max_open) == (
                    value.low,
                    value.high,
                    value.low_open,
                    value.high_open,
                ), setting.name
            if isinstance(ptype, click.Choice):
                assert tuple(ptype.choices) == value.choices
    evaluate = {p.name for p in cli.commands["evaluate"].params}
    assert {"data_spec", "scale", "resize", "search_fraction", "seed", "batch_size"} <= evaluate
    check = {p.name for p in cli.commands["check"].params}
    assert {s.param for s in CHECK_SETTINGS} <= check


def test_defaults_are_the_papers_final_method() -> None:
    """The default method is pareto; with --method paper the defaults are the paper's final method."""
    assert search_settings(DEFAULTS | {"model": "m", "data": "d"}) == SearchSettings(method="pareto")
    paper = DEFAULTS | {"method": "paper"}
    assert search_settings(paper) == SearchSettings()
    independent = search_settings(paper | {"independent": True})
    assert independent.bw0 == INDEPENDENT_BW0 and all(
        rule.scheme == "constant" and rule.end == 1.0 for rule in independent.allocation.values()
    )
    custom = search_settings(
        paper | {"allocation": "quadratic", "budget": (("A", "log", 0.5, 1.0),), "order": "A,W,B"}
    )
    assert custom.type_order == ("A", "W", "B")
    assert custom.allocation["W"].scheme == "quadratic" and custom.allocation["A"].scheme == "log"


def test_command_line_overrides_the_file_only_where_given() -> None:
    file_values = _run_file("model: m.keras\ndata: mnist\neps: 0.05\nseed: 3\n").values
    cli_values = {s.name: s.default for s in RUN_SETTINGS} | {"eps": 0.02, "seed": 0, "out": Path("o")}
    merged = merge_run(file_values, cli_values, explicit=["eps", "out"])
    assert (merged["eps"], merged["seed"], merged["out"], merged["data"]) == (0.02, 3, "o", "mnist")


# --------------------------------------------------------------------------------------------------
# Errors: file, line, field, value, valid values


def test_unknown_field_names_line_and_suggests() -> None:
    message = _error("model: m.keras\ndata: mnist\nepsilon: 0.1\nscheme: linear\n")
    first, second = message.splitlines()
    assert first.startswith("job.yaml:3: unknown field 'epsilon'; did you mean eps?")
    assert "Valid fields: model, data," in first
    assert second.startswith("job.yaml:4: unknown field 'scheme'; did you mean allocation?")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("eps: 1.5", ["job.yaml:1: eps: got 1.5; valid: a number in (0, 1), e.g. 0.01"]),
        ("eps: 0", ["eps: got 0", "(0, 1)"]),
        ("eps: '0.01'", ["eps: got '0.01'", "a number"]),
        ("eps: .nan", ["eps: got NaN"]),
        ("seed: 1.5", ["seed: got 1.5; valid: an integer"]),
        ("independent: 1", ["independent: got 1; valid: true or false"]),
        ("layer_order: sideways", ["got 'sideways'; valid: one of forward, reverse"]),
        ("order: WWA", ["order: got 'WWA'", "W, B and A, each once"]),
        ("bw0: [1, 8, 8]", ["bw0: got [1, 8, 8]", "3 integers in [2, 24]"]),
        ("budget: [A, log, 0, 1]", ["budget: got", "[TYPE, SCHEME, START, END]"]),
        ("data: null", ["data: got null; valid: text, e.g. mnist"]),
        ("\n\neps: [0.01, 0.02]", ["job.yaml:3: eps", "only `optsearch batch` expands"]),
        ("jobs: []", ["jobs: belongs to a batch file"]),
        ("check: {max_loss: 0.1}", ["check: needs a baseline"]),
        ("check: {baseline: b.json, tolerence: 0.1}", ["check.tolerence: unknown field", "tolerance"]),
    ],
)
def test_bad_values_name_file_line_field_value_and_valid_values(text: str, fragments: list[str]) -> None:
    message = _error(text)
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "job.yaml: must be a mapping of run settings"),
        ("- eps: 0.1", "must be a mapping"),
        ("eps: [0.1", "job.yaml:1: is not valid YAML"),
        ("eps: 0.1\neps: 0.2", "job.yaml:2: field 'eps' is given twice (also on line 1)"),
        ("a: 1\n---\nb: 2", "is not valid YAML"),
        ("eps: !!python/object:os.system x", "is not valid YAML"),
        ("eps: !custom 0.1", "is not valid YAML"),
        ("x: &a [*a]", "nests deeper"),
        ("1: 2", "field names are text"),
    ],
)
def test_yaml_problems_are_clean_errors(text: str, fragment: str) -> None:
    assert fragment in _error(text)


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    assert "more than" in _error("\n".join(lines))


def test_yaml_conveniences() -> None:
    """1e-2 is a number (YAML 1.1 reads it as text), and anchors with merge keys share settings."""
    assert _run_file("eps: 2e-2").values == {"eps": 0.02}
    config = _batch(
        "defaults: {data: mnist}\njobs:\n  - &base {model: m.keras, eps: 0.05}\n  - {<<: *base, seed: 2}\n"
    )
    assert [(j.values["eps"], j.values["seed"]) for j in config.jobs] == [(0.05, 0), (0.05, 2)]


def test_every_problem_is_listed_at_once() -> None:
    message = _error(
        "defaults:\n  data: 3\n  eps: 1.5\njobs:\n  - model: m.keras\n    order: WWA\n  - eps: [0.1, x]\n",
        batch=True,
    )
    lines = message.splitlines()
    assert [line.split(":")[1] for line in lines] == ["2", "3", "6", "7", "7"], message
    assert "zoo.yaml:7: jobs[1].eps[1]: got 'x'" in message
    assert "zoo.yaml:7: jobs[1]: no model: give it in this job or under defaults:" in message


# --------------------------------------------------------------------------------------------------
# Batch files and grids


def test_grid_expands_in_file_order_with_defaults_and_overrides() -> None:
    config = _batch(
        "out: runs/x\n"
        "defaults: {data: mnist, eps: [0.005, 0.01]}\n"
        "check: {baseline: 'b/{name}.json'}\n"
        "jobs:\n"
        "  - model: a.keras\n"
        "    allocation: [linear, quadratic]\n"
        "  - model: b.keras\n"
        "    bw0: [[12, 8, 12], [8, 8, 8]]\n"
        "    budget: [[A, quadratic, 0.5, 1.0]]\n"
        "    check: null\n"
    )
    assert config.out == "runs/x" and len(config.jobs) == 8
    assert [j.varied for j in config.jobs[:4]] == [
        {"eps": 0.005, "allocation": "linear"},
        {"eps": 0.005, "allocation": "quadratic"},
        {"eps": 0.01, "allocation": "linear"},
        {"eps": 0.01, "allocation": "quadratic"},
    ]
    assert config.jobs[0].check == {
        "baseline": "b/{name}.json",
        "max_loss": None,
        "tolerance": 0.01,
        "exact": False,
    }
    last = config.jobs[-1]
    assert last.values["bw0"] == (8, 8, 8) and last.values["budget"] == (("A", "quadratic", 0.5, 1.0),)
    assert last.check is None and last.where == "zoo.yaml:7"
    overridden = _batch("defaults: {data: mnist}\njobs: [{model: a.keras, eps: 0.02}]", {"eps": [0.1, 0.2]})
    assert [j.values["eps"] for j in overridden.jobs] == [0.1, 0.2]


def test_which_lists_are_grids() -> None:
    assert is_grid(SETTINGS["eps"], [0.1, 0.2]) and not is_grid(SETTINGS["eps"], 0.1)
    assert not is_grid(SETTINGS["bw0"], [12, 8, 12]) and is_grid(SETTINGS["bw0"], [[12, 8, 12]])
    assert not is_grid(SETTINGS["budget"], [["A", "log", 0, 1]]) and not is_grid(SETTINGS["budget"], [])
    assert is_grid(SETTINGS["budget"], [[], [["A", "log", 0, 1]]])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("jobs: []", "jobs: must be a non-empty list"),
        ("defaults: {data: mnist}", "jobs: must be a non-empty list"),
        (
            "eps: 0.1\njobs: [{model: m, data: d}]",
            "zoo.yaml:1: eps: is a run setting; put it under defaults:",
        ),
        (
            "model: m\ndata: d",
            "zoo.yaml:1: has no jobs: list; a file of one run's settings runs with `optsearch run",
        ),
        ("jobs: [{model: m, data: d, eps: []}]", "an empty list expands to no jobs"),
        ("jobs: [{model: m, data: d, name: [x]}]", "jobs[0].name: got"),
        ("jobs: [{model: m, data: d, mode: independent}]", "did you mean independent (true or false)?"),
        (
            "jobs: [{model: m, data: d, eps: [0.1, 0.2], seed: [1, 2], delta: [0, 1, 2], batch_size: "
            + str(list(range(1, 600)))
            + ", input_bits: "
            + str(list(range(1, 33)))
            + "}]",
            "more than 10000",
        ),
        ("check: {tolerance: 0.1}\njobs: [{model: m, data: d}]", "check: needs a baseline"),
    ],
)
def test_bad_batch_files(text: str, fragment: str) -> None:
    assert fragment in _error(text, batch=True)


def test_set_overrides_are_yaml_and_checked() -> None:
    assert parse_overrides(["eps=0.02", "bw0=[8, 8, 8]", "search_fraction=1e-1"]) == {
        "eps": 0.02,
        "bw0": [8, 8, 8],
        "search_fraction": 0.1,
    }
    with pytest.raises(ConfigError, match="write FIELD=VALUE"):
        parse_overrides(["eps"])
    jobs = "jobs: [{model: m, data: d}]"
    with pytest.raises(ConfigError) as caught:
        _batch(jobs, {"epz": 1})
    assert str(caught.value).startswith("--set: epz: unknown field 'epz'; did you mean eps?")
    with pytest.raises(ConfigError) as caught:
        _batch(jobs, {"eps": 2})
    assert str(caught.value).startswith("--set: eps: got 2; valid: a number in (0, 1)")


# --------------------------------------------------------------------------------------------------
# The CLI: exit 2 before anything runs


def test_run_config_errors_exit_2_before_anything_runs(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("model: m.keras\ndata: mnist\neps: 2\nout: " + str(tmp_path / "out") + "\n")
    result = _run("run", "--config", job)
    assert result.exit_code == 2 and f"Error: {job}:3: eps: got 2;" in result.output
    assert "Traceback" not in result.output and sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]
    result = _run("run", "--config", tmp_path / "none.yaml")
    assert result.exit_code == 2 and "none.yaml: file not found" in result.output
    job.write_text("eps: 0.02\n")
    result = _run("run", "--config", job)
    assert (
        result.exit_code == 2 and "Missing argument 'MODEL' (or model: in the --config file)" in result.output
    )
    result = _run("run", "m.keras", "--config", job)
    assert (
        result.exit_code == 2 and "Missing option '--data' (or data: in the --config file)" in result.output
    )
    result = _run("run", "m.keras", "--data", "mnist", "--config", job, "--order", "WWA")
    assert result.exit_code == 2 and "--order WWA: give each of W, B, A once" in result.output


def test_batch_config_errors_exit_2_before_anything_runs(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("defaults:\n  data: mnist\njobs:\n  - model: m.keras\n    eps: [0.01, 2]\n")
    result = _run("batch", zoo, "--out", tmp_path / "runs")
    assert result.exit_code == 2 and f"{zoo}:5: jobs[0].eps[1]: got 2" in result.output
    same = tmp_path / "same"
    result = _run(
        "batch", zoo, "--out", tmp_path / "runs", "--set", "eps=[0.01, 0.02]", "--set", f"out={same}"
    )
    assert result.exit_code == 2 and f"have the same folder {same}" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo.yaml"]


# --------------------------------------------------------------------------------------------------
# Fuzzing: any document is a valid config or a clean ConfigError


_KEYS = st.sampled_from([s.name for s in RUN_SETTINGS] + ["jobs", "defaults", "check", "out", "name", "x"])
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["WBA", "AWB", "paper", "linear", "A", "mnist", "m.keras", "forward", "{name}"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_KEYS | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)
_DOCUMENTS = st.dictionaries(_KEYS, _VALUES, max_size=6) | _VALUES


def _never_crashes(data: object) -> None:
    for check in (check_run_document, check_batch_document, check_section_document):
        try:
            check(Document("fuzz.yaml", data))  # type: ignore[operator]
        except ConfigError as err:
            assert str(err)


@given(_DOCUMENTS)
def test_fuzz_random_data(data: object) -> None:
    _never_crashes(data)


@given(_DOCUMENTS)
def test_fuzz_random_yaml_documents(data: object) -> None:
    text = yaml.safe_dump(data, default_flow_style=bool(hash(str(data)) % 2))
    try:
        document = parse_yaml(text, "fuzz.yaml")
    except ConfigError:
        return
    _never_crashes(document.data)


_TOKENS = st.sampled_from(
    [
        *string.printable,
        "eps:",
        "jobs:",
        "- ",
        "  ",
        "\n",
        "[",
        "]",
        "{",
        "}",
        "&a ",
        "*a",
        "<<: ",
        "!!",
        "!!python/object:os.system",
        "? ",
        "| ",
        "> ",
        "---",
        "...",
        "%YAML 1.1",
        "1e-3",
        ".inf",
        "0x1f",
        "model: m.keras",
        "defaults:",
        "\t",
        "'",
        '"',
        "\xff",
        "\x00",
        "\u2028",
    ]
)


@given(st.lists(_TOKENS, max_size=40).map("".join))
def test_fuzz_random_yaml_text(text: str) -> None:
    try:
        document = parse_yaml(text, "fuzz.yaml")
    except ConfigError as err:
        assert str(err).startswith("fuzz.yaml")
        return
    _never_crashes(document.data)


def test_fuzz_through_the_cli(tmp_path: Path) -> None:
    """A few garbage files through `run --config` and `batch`: exit 2, an Error line, no traceback."""
    garbage = [
        b"{",
        b"eps: [",
        b"- - -",
        b"\xff\xfe",
        b"a: &a [*a]",
        b"jobs: {x: 1}",
        b"model: [[[",
        b"? [a]\n: b",
    ]
    for i, content in enumerate(garbage):
        path = tmp_path / f"g{i}.yaml"
        path.write_bytes(content)
        for args in (
            ["run", "--config", path],
            ["batch", path, "--dry-run"],
            ["check", "r", "--config", path],
        ):
            result = _run(*args)
            assert result.exit_code == 2, (content, args, result.output)
            assert "Error:" in result.output and "Traceback" not in result.output


def test_infinite_numbers_are_refused() -> None:
    assert "got Infinity" in _error("eps: .inf") and "got -Infinity" in _error("delta: -.inf")


def test_the_documented_tables_are_the_schema() -> None:
    """docs/batch.md lists the settings as the schema declares them (regenerate with schema_table())."""
    doc = (Path(__file__).parent.parent / "docs" / "batch.md").read_text()
    assert schema_table() in doc and schema_table(CHECK_SETTINGS) in doc
