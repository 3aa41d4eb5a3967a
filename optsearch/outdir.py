"""Output folders that appear whole or not at all. No Keras: the CLI checks them before loading anything."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from optsearch.errors import OptsearchError


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an existing output folder unless ``overwrite``, before anything runs."""
    if out_dir.exists() and not overwrite:
        raise OptsearchError(f"output folder {out_dir} exists; choose another --out or pass --overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise OptsearchError(f"--out {out_dir} is a file, not a folder; choose another --out")


@contextlib.contextmanager
def atomic_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` that replaces it only when the block succeeds."""
    check_out_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
