"""The ``optsearch`` command line (Click): the group, its error handling, and the entry point.

Nothing imports the ``cli`` package; it only composes the public layers. One module per command
group: ``model_commands`` (inspect, evaluate), ``run_commands`` (run, check, batch), ``deploy``
(export, verify). Every problem with the user's input is one line on stderr and exit code 2;
nothing is written.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from optsearch import __version__
from optsearch.cli.deploy import export_command, verify_command
from optsearch.cli.model_commands import evaluate, inspect
from optsearch.cli.options import UserError
from optsearch.cli.run_commands import batch, check, pareto, run
from optsearch.core.errors import OptsearchError
from optsearch.model.environment import use_tensorflow_backend


class _Group(click.Group):
    """Turns tool errors into one-line messages; a traceback only with OPTSEARCH_DEBUG=1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OptsearchError as err:
            raise UserError(str(err)) from err
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, BrokenPipeError):
            raise
        except Exception as err:
            if os.environ.get("OPTSEARCH_DEBUG"):
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise click.ClickException(
                f"internal error: {type(err).__name__}: {first} "
                "(this is a bug in optsearch; rerun with OPTSEARCH_DEBUG=1 to see the traceback)"
            ) from err


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="optsearch")
def cli() -> None:
    """Find the smallest fixed-point format (BW, F) for every layer of a trained Keras CNN.

    optsearch quantizes the weights, biases and activations of every Dense and convolution layer
    without retraining, keeping the top-1 accuracy loss within a budget (the OptSearchCNN method).

    \b
    Start with:
      optsearch inspect model.keras                    what would be quantized
      optsearch run model.keras --data mnist --eps 0.01   the search (writes a report folder)
      optsearch evaluate model.keras --data mnist      float and uniform 8-bit accuracy
    """


for command in (inspect, evaluate, run, pareto, check, batch, export_command, verify_command):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point: Keras' TensorFlow backend, then the command."""
    note = use_tensorflow_backend()
    if note is not None:
        click.echo(note, err=True)
    try:
        cli(prog_name="optsearch")
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
