"""``python -m optsearch``: the same as the ``optsearch`` command."""

from optsearch.cli.main import main

main()
