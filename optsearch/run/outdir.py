"""Output folders that appear whole or not at all, and the work folder of a run in progress.

No Keras: the CLI checks them before loading anything. A run writes into ``<out>.partial/`` beside
``--out`` and renames it to ``--out`` only when it has finished. An interrupted run (Ctrl-C, SIGTERM,
``kill -9``) leaves its work folder, with the decisions made so far, for ``--resume``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from optsearch.core.errors import OptsearchError

PARTIAL_SUFFIX = ".partial"


def partial_dir(out_dir: Path) -> Path:
    """The work folder of a run into ``out_dir``: ``<out>.partial`` beside it."""
    return out_dir.parent / f"{out_dir.name}{PARTIAL_SUFFIX}"


def check_out_dir(out_dir: Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse an existing output folder unless ``overwrite``, and a stray work folder, before anything runs.

    With ``resume`` there must be a work folder to resume; without it, an existing work folder is
    refused (it holds an interrupted run) unless ``overwrite`` discards it.
    """
    work = partial_dir(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OptsearchError(f"--out {out_dir} is a file, not a folder; choose another --out")
    if out_dir.exists() and not overwrite:
        finished = " (a finished run: there is nothing to resume)" if resume else ""
        raise OptsearchError(
            f"output folder {out_dir} exists{finished}; choose another --out or pass --overwrite"
        )
    if resume:
        if not work.is_dir():
            raise OptsearchError(
                f"nothing to resume: there is no interrupted run of --out {out_dir} ({work} does not "
                "exist); run without --resume"
            )
        return
    if work.exists() and not overwrite:
        raise OptsearchError(
            f"{work} holds an interrupted run of --out {out_dir}; continue it with the same command "
            "and --resume, or pass --overwrite to discard it and start again"
        )


@contextlib.contextmanager
def work_dir(
    out_dir: Path, overwrite: bool, resume: bool, keep: Callable[[BaseException], bool]
) -> Iterator[Path]:
    """The work folder ``<out>.partial``, renamed to ``out_dir`` when the block succeeds.

    A fresh run starts from an empty work folder (an old one is discarded, ``check_out_dir`` allowing);
    ``resume`` keeps what is there. When the block fails, the work folder is kept if
    ``keep(error)`` says so (an interruption with something to resume), else removed.
    """
    check_out_dir(out_dir, overwrite, resume)
    work = partial_dir(out_dir)
    if not resume and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    except BaseException as err:
        if not keep(err):
            shutil.rmtree(work, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work.rename(out_dir)


@contextlib.contextmanager
def atomic_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` that replaces it only when the block succeeds (exports)."""
    if out_dir.exists() and not overwrite:
        raise OptsearchError(f"output folder {out_dir} exists; choose another --out or pass --overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise OptsearchError(f"--out {out_dir} is a file, not a folder; choose another --out")
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
