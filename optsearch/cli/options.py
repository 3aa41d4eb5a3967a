"""The command line's building blocks: exit codes, the one-line user error, and the Click options
built from the settings schema (the CLI's only declaration of them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from optsearch.config.schema import DATA_SETTINGS, MODEL_SETTINGS, SETTINGS, Setting, Value, parse_order

F = TypeVar("F", bound=Callable[..., Any])
EXIT_REGRESSION = 1
"""A check found a regression, or a batch job failed."""
EXIT_USER_ERROR = 2
"""Invalid input (file, model, data, settings, config): nothing ran or was written."""


class UserError(click.ClickException):
    """An ``OptsearchError`` shown the Click way: ``Error: <message>``, exit code 2."""

    exit_code = EXIT_USER_ERROR


def click_type(setting: Setting) -> Any:
    """The click type of a setting, from its schema entry (ranges and choices included)."""

    def scalar(value: Value) -> Any:
        if value.kind in ("int", "float"):
            if value.low is None and value.high is None:
                return int if value.kind == "int" else float
            kind = click.IntRange if value.kind == "int" else click.FloatRange
            return kind(value.low, value.high, min_open=value.low_open, max_open=value.high_open)  # type: ignore[arg-type]
        if value.kind == "choice":
            return click.Choice(value.choices)
        if value.kind == "path":
            return click.Path(file_okay=setting.cli_type != "dir", path_type=Path)
        return str

    if isinstance(setting.value, tuple):
        return tuple(scalar(v) for v in setting.value)
    return scalar(setting.value)


def _param(setting: Setting, optional: bool) -> Callable[[F], F]:
    """The click argument or option of one schema entry; ``optional`` when a --config file may give it."""
    required = setting.required and not optional
    if setting.argument:
        return click.argument(setting.param, type=click_type(setting), required=required)
    if setting.values[0].kind == "bool":
        flags = f"{setting.flag}/{setting.off_flag}" if setting.off_flag else setting.flag
        return click.option(flags, setting.param, default=bool(setting.default), help=setting.help)
    return click.option(
        setting.flag,
        setting.param,
        type=click_type(setting),
        default=() if setting.multiple else setting.default,
        show_default=setting.show_default and setting.default is not None,
        required=required,
        multiple=setting.multiple,
        metavar=setting.metavar,
        help=setting.help,
    )


def schema_options(names: Iterable[str] | Iterable[Setting], *, optional: bool = False) -> Callable[[F], F]:
    """The options (and MODEL argument) of these schema entries, in order: the CLI's only declaration."""
    settings = [SETTINGS[n] if isinstance(n, str) else n for n in names]

    def decorate(fn: F) -> F:
        for setting in reversed(settings):
            fn = _param(setting, optional)(fn)
        return fn

    return decorate


model_options = schema_options(MODEL_SETTINGS)
"""Options about reading the model."""
data_options = schema_options(DATA_SETTINGS)
"""Options about the evaluation data and the search/held-out split (spec §4)."""
offset_rule_option = schema_options(["offset_rule"])


def explicit_settings(ctx: click.Context, settings: Iterable[Setting]) -> list[str]:
    """The settings given on the command line (not left at their defaults): these override a file."""
    defaults = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)
    return [s.name for s in settings if ctx.get_parameter_source(s.param) not in defaults]


def checked_order(text: str) -> tuple[str, ...]:
    try:
        return parse_order(text)
    except ValueError as err:
        raise UserError(f"--order {text}: {err}") from err
