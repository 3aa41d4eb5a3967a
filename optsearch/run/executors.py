"""Where a batch's jobs run: a local pool of spawned processes, or the workers of a Dask cluster.

Both are ``concurrent.futures`` executors (Dask's ``Client.get_executor()`` is one), so
``run.batch`` keeps one wait loop for both. A ``JobPool`` adds what differs: how a job is
submitted (on Dask, in the folder the batch runs in), whether the workers see the batch's files,
and how a lost worker is reported. Dask is imported only when asked for (``optsearch[dask]``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from optsearch.config.schema import EXECUTORS
from optsearch.core.errors import OptsearchError

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
Echo = Callable[[str], None]

DASK_INSTALL = "pip install 'optsearch[dask]'"
#: How long to wait for a scheduler given by address to answer.
CONNECT_TIMEOUT_S = 30
_SHARED_FILES = "Dask workers need the batch's files on a shared filesystem, at the same paths as here"


class JobPool(Protocol):
    """Runs a batch's jobs: submit one, check the workers can reach the files, word a lost worker."""

    where: str
    """Where the jobs run, in words (for the terminal)."""

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]: ...

    def check_access(self, read: Sequence[Path], write: Sequence[Path]) -> None:
        """Raise an ``OptsearchError`` naming the first file the workers cannot read (or folder they
        cannot write) although this process can; do nothing where the workers share this machine."""

    def failure(self, err: BaseException) -> str:
        """The message of a job whose worker died (the job itself never raises)."""


class LocalPool:
    """``workers`` spawned processes on this machine (not forked: TensorFlow does not survive a fork)."""

    def __init__(self, executor: ProcessPoolExecutor, workers: int) -> None:
        self.executor = executor
        self.where = f"{workers} local processes"

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self.executor.submit(fn, *args)

    def check_access(self, read: Sequence[Path], write: Sequence[Path]) -> None:
        return None  # the processes share this machine's files

    def failure(self, err: BaseException) -> str:
        return f"worker process failed: {err!r}"


class DaskPool:
    """The workers of a Dask cluster, through ``Client.get_executor()``.

    Each job runs in the folder the batch runs in (relative paths of the batch file mean the same
    there), one at a time per worker process: a job redirects its process's output to its log.
    """

    def __init__(self, client: Client, where: str) -> None:
        self.client = client
        self.executor: Executor = cast(Any, client).get_executor(pure=False)
        self.where = where
        self.cwd = os.getcwd()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self.executor.submit(run_in_folder, self.cwd, fn, *args)

    def check_access(self, read: Sequence[Path], write: Sequence[Path]) -> None:
        # Only what this process reaches: a file missing here fails its job, as with the local pool.
        wanted = [
            *(("read", os.path.abspath(p)) for p in read if os.access(p, os.R_OK)),
            *(("write to", os.path.abspath(p)) for p in map(_existing_folder, write) if _writable(p)),
        ]
        try:
            answers = self.client.run(first_inaccessible, wanted)
        except Exception as err:  # e.g. optsearch is not installed on a worker
            raise OptsearchError(
                f"could not check the Dask workers' files ({type(err).__name__}: {_first_line(err)}); "
                f"the workers need optsearch installed ({DASK_INSTALL}) and the batch's files"
            ) from err
        for worker, problem in sorted(answers.items()):
            if problem is not None:
                verb, path = problem
                raise OptsearchError(
                    f"the Dask worker {worker} cannot {verb} {path}: {_SHARED_FILES} ({self.cwd})"
                )

    def failure(self, err: BaseException) -> str:
        from distributed import KilledWorker

        if isinstance(err, KilledWorker):
            times = err.allowed_failures + 1
            return (
                f"its Dask worker died {times} time{'s' if times != 1 else ''} while running it (last "
                f"{err.last_worker.address}; see the worker logs); its work folder is kept: rerun the "
                "batch to resume it"
            )
        return f"Dask worker failed: {type(err).__name__}: {_first_line(err)}"


@contextlib.contextmanager
def open_pool(kind: str, workers: int, scheduler: str | None = None, echo: Echo = print) -> Iterator[JobPool]:
    """The pool of ``kind`` (``local`` or ``dask``) for the block; closed (pending jobs cancelled) after it.

    ``local``: ``workers`` spawned processes. ``dask``: the cluster whose scheduler is at
    ``scheduler`` (``tcp://host:8786``), else a ``LocalCluster`` of ``workers`` processes on 127.0.0.1.
    """
    if kind == "local":
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as executor:
            yield LocalPool(executor, workers)
        return
    if kind != "dask":
        raise OptsearchError(f"unknown executor {kind!r}; valid: {', '.join(EXECUTORS)}")
    require_dask()
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(_dask_client(workers, scheduler, echo))
        pool = DaskPool(client, _dask_where(client, scheduler))
        stack.callback(pool.executor.shutdown, wait=False)  # cancels what has not finished
        yield pool


def require_dask() -> None:
    """Raise an ``OptsearchError`` saying what to install when Dask distributed is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError as err:
        raise OptsearchError(
            f"--executor dask needs Dask distributed, which is not installed: {DASK_INSTALL}"
        ) from err


@contextlib.contextmanager
def _dask_client(workers: int, scheduler: str | None, echo: Echo) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler`` with at least one worker, or of a new ``LocalCluster``."""
    dask = _distributed()
    if scheduler is None:
        with (
            dask.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                memory_limit=0,  # as the local pool: no memory cap that would restart a worker
                silence_logs=logging.ERROR,
            ) as cluster,
            dask.Client(cluster) as client,
        ):
            client.wait_for_workers(workers)
            yield client
        return
    try:
        client = dask.Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, ValueError, TypeError) as err:
        raise OptsearchError(
            f"cannot reach the Dask scheduler at {scheduler} ({_first_line(err)}); start it (dask "
            "scheduler) or leave out --scheduler to run a local cluster"
        ) from err
    with client:
        if not client.scheduler_info()["workers"]:
            echo(f"waiting for a worker to join the Dask scheduler at {scheduler} (Ctrl-C stops)")
            client.wait_for_workers(1)
        yield client


def _distributed() -> Any:
    """The ``distributed`` module, untyped: its constructors and ``get_executor`` carry no annotations."""
    import distributed

    return distributed


def _dask_where(client: Client, scheduler: str | None) -> str:
    """``Dask cluster at tcp://...: 2 workers``; a note when a worker runs several threads."""
    workers = client.scheduler_info()["workers"]
    threaded = sorted(address for address, info in workers.items() if info.get("nthreads", 1) > 1)
    text = (
        f"Dask {'scheduler ' + scheduler if scheduler else 'LocalCluster on 127.0.0.1'}: "
        f"{len(workers)} worker{'s' if len(workers) != 1 else ''}"
    )
    if threaded:
        text += (
            f" (note: {threaded[0]} runs several threads, but one job at a time per worker process; "
            "start workers with --nthreads 1)"
        )
    return text


# --------------------------------------------------------------------------------------------------
# Run on the workers (module-level functions: a worker imports them by name)

_ONE_JOB = threading.Lock()
"""A job changes its process's folder and output streams: one job at a time per worker process."""


def run_in_folder(folder: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in ``folder`` (when it exists here), alone in this process."""
    with _ONE_JOB:
        before = os.getcwd()
        if os.path.isdir(folder):
            os.chdir(folder)
        try:
            return fn(*args)
        finally:
            os.chdir(before)


def first_inaccessible(wanted: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """The first ``(verb, path)`` this process cannot read (``read``) or write into (``write to``)."""
    for verb, path in wanted:
        if not os.access(path, os.R_OK if verb == "read" else os.W_OK | os.X_OK):
            return verb, path
    return None


def _existing_folder(path: Path) -> Path:
    """``path`` or its nearest existing parent: where a job's folder will be created."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]
