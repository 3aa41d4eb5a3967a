"""``python -m optsearch``: the same as the ``optsearch`` command."""

from optsearch.cli import main

main()
