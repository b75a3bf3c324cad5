"""Executors for sweeps: local worker processes and a Dask cluster, one interface.

Both executors are :class:`concurrent.futures.Executor` subclasses: ``submit(fn, *args)``
returns a :class:`concurrent.futures.Future`, ``shutdown()`` releases the workers, and
``concurrent.futures.as_completed`` / ``wait`` work on their futures. A sweep only ever talks
to that interface (:func:`make_executor` picks the executor from the command-line options).

:class:`LocalExecutor` runs every call in a fresh process. Mesa 3.3.1 keeps every model it
ever built alive (``mesa.Agent._ids`` is a class-level dict keyed by model), so a long-lived
worker would grow with every run; a fresh process per run also means no state can leak from
one run to the next. The processes come from the ``forkserver`` start method with marginsim
pre-imported and its numba kernels loaded in the server (:data:`PRELOAD`), so a run's process
starts in milliseconds instead of paying the 0.7 s import of numpy, pandas, numba and mesa and
the 0.3-0.5 s load of the kernels; the server is a single-threaded process, so forking it is
safe, unlike forking a driver that runs threads (pyarrow, tqdm).

:class:`DaskExecutor` sends calls to a ``dask.distributed`` cluster (an existing one by
address, or a ``LocalCluster`` started for the sweep). Dask workers are long-lived, so the
sweep's task releases its model from Mesa's registry itself (see
:func:`marginsim.experiments.sweep.execute_run`).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import threading
import traceback
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = [
    "PRELOAD",
    "DaskExecutor",
    "DaskUnavailableError",
    "LocalExecutor",
    "WorkerDiedError",
    "default_workers",
    "make_executor",
]

logger = logging.getLogger(__name__)

#: Modules the fork server imports once; every run's process inherits them already loaded.
PRELOAD = (
    "marginsim.model",
    "marginsim.experiments.runner",
    "marginsim.experiments.store",
    "marginsim.experiments.sweep",
    "marginsim.experiments._forkserver_warmup",  # loads the numba kernels once in the server
)


class WorkerDiedError(RuntimeError):
    """A worker process ended (killed, crashed) before it returned its result."""


class RemoteError(RuntimeError):
    """A call raised in a worker process; ``remote_traceback`` holds the worker's traceback."""

    def __init__(self, message: str, remote_traceback: str) -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback


class DaskUnavailableError(RuntimeError):
    """The Dask executor was asked for but ``dask.distributed`` is not installed."""


def default_workers() -> int:
    """Worker processes by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _child_main(conn: Connection, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Body of a run's process: call ``fn`` and send back ``("ok", value)`` or the error."""
    try:
        value = fn(*args, **kwargs)
        message: tuple[str, Any] = ("ok", value)
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, not swallowed
        message = ("error", (f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    try:
        conn.send(message)
    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable return value
        conn.send(("error", (f"cannot send the result back: {exc}", traceback.format_exc())))
    finally:
        conn.close()


class LocalExecutor(cf.Executor):
    """At most ``workers`` calls at a time, each in a fresh process on this machine.

    Args:
        workers: Processes running at once (default: :func:`default_workers`).
        start_method: ``"forkserver"`` (default, Linux and macOS) or ``"spawn"``.
        preload: Modules the fork server imports once (default :data:`PRELOAD`).

    A worker killed from outside fails only its own future, with :class:`WorkerDiedError`;
    the other calls go on. ``fn``, its arguments and its result must be picklable.
    """

    def __init__(
        self,
        workers: int | None = None,
        start_method: str = "forkserver",
        preload: tuple[str, ...] = PRELOAD,
    ) -> None:
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # Ignored when this process's fork server is already running (same modules).
            self._ctx.set_forkserver_preload(list(preload))
        self._pending: deque[tuple[cf.Future, Callable[..., Any], tuple, dict]] = deque()
        self._running: dict[Connection, tuple[cf.Future, Any]] = {}
        self._lock = threading.Lock()
        self._wakeup_r, self._wakeup_w = mp.Pipe(duplex=False)
        self._shutdown = False
        self._thread = threading.Thread(target=self._loop, name="marginsim-local", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        """Schedule ``fn(*args, **kwargs)`` in a fresh process and return its future."""
        future: cf.Future = cf.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.append((future, fn, args, kwargs))
        self._wake()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls; optionally cancel queued ones; ``wait`` for running ones.

        With ``wait=False`` the running processes are terminated (their futures fail with
        :class:`WorkerDiedError`): this is what an interrupted sweep wants.
        """
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._pending:
                    self._pending.popleft()[0].cancel()
            if not wait:
                for _future, proc in self._running.values():
                    proc.terminate()
        self._wake()
        if wait:
            self._thread.join()

    def _wake(self) -> None:
        try:
            self._wakeup_w.send(None)
        except OSError:  # pragma: no cover - the loop already closed the pipe
            pass

    def _start_next(self) -> None:
        while len(self._running) < self.workers and self._pending:
            future, fn, args, kwargs = self._pending.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            receiver, sender = self._ctx.Pipe(duplex=False)
            proc = self._ctx.Process(
                target=_child_main, args=(sender, fn, args, kwargs), daemon=True
            )
            try:
                proc.start()
            except BaseException as exc:  # noqa: BLE001 - the future carries it
                future.set_exception(exc)
                receiver.close()
                continue
            finally:
                sender.close()
            self._running[receiver] = (future, proc)

    def _finish(self, conn: Connection) -> None:
        future, proc = self._running.pop(conn)
        try:
            status, payload = conn.recv()
        except (EOFError, OSError):
            proc.join()
            future.set_exception(
                WorkerDiedError(f"worker process {proc.pid} ended with exit code {proc.exitcode}")
            )
            return
        finally:
            conn.close()
        proc.join()
        if status == "ok":
            future.set_result(payload)
        else:
            message, trace = payload
            future.set_exception(RemoteError(message, trace))

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._start_next()
                done = self._shutdown and not self._running and not self._pending
                waiting = list(self._running)
            if done:
                break
            ready = wait([*waiting, self._wakeup_r])
            with self._lock:
                for conn in ready:
                    if conn is self._wakeup_r:
                        while self._wakeup_r.poll():
                            self._wakeup_r.recv()
                    else:
                        self._finish(conn)  # type: ignore[arg-type]
        self._wakeup_r.close()


class DaskExecutor(cf.Executor):
    """Calls run on a ``dask.distributed`` cluster.

    Args:
        address: ``"tcp://host:port"`` of a running scheduler, or ``"local"`` to start a
            ``LocalCluster`` (``workers`` processes, one thread each) for this executor.
        workers: Worker processes of the local cluster (default :func:`default_workers`);
            ignored for a remote scheduler.

    Raises:
        DaskUnavailableError: If ``dask.distributed`` is not installed.

    The workers must import the same marginsim and, because each run writes its own folder,
    see the output folder at the same path (a shared file system on a real cluster).
    """

    def __init__(self, address: str, workers: int | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise DaskUnavailableError(
                "the Dask executor needs the optional 'cluster' extra: "
                "pip install 'marginsim[cluster]'"
                f" (import failed: {exc})"
            ) from None
        self._cluster = None
        if address == "local":
            self._cluster = LocalCluster(
                n_workers=default_workers() if workers is None else int(workers),
                threads_per_worker=1,  # a run holds the GIL: threads would only queue
                processes=True,
                dashboard_address=None,
            )
            self._client = Client(self._cluster)
        else:
            self._client = Client(address)
        # pure=False: two identical calls are two runs, never one cached result.
        self._executor = self._client.get_executor(pure=False)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        """Schedule ``fn(*args, **kwargs)`` on the cluster and return its future."""
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release the client, and the local cluster if this executor started one."""
        try:
            self._executor.shutdown(wait=wait and not cancel_futures)
        finally:
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()


def make_executor(workers: int | None = None, scheduler: str | None = None) -> cf.Executor:
    """The executor for ``--workers`` / ``--scheduler``.

    Args:
        workers: Local worker processes (default: all cores).
        scheduler: ``None`` for local processes, ``"local"`` for a Dask ``LocalCluster``,
            or a Dask scheduler address (``tcp://host:port``).

    Raises:
        DaskUnavailableError: A scheduler was given without ``dask.distributed`` installed.
        ValueError: ``workers`` < 1.
    """
    if scheduler is None:
        return LocalExecutor(workers)
    return DaskExecutor(scheduler, workers)
