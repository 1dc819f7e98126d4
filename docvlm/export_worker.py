"""Parse and export one text at a time in a child process, so that native renderers crashing on odd
model output (verovio segfaults on some **kern) cost only that page of `docvlm convert`, or that drawing
of an evaluation report, never the whole run."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from docvlm.decode import Generation
from docvlm.tasks.base import Task

STARTUP_TIMEOUT = 300.0  # seconds a new export process may take to import before it counts as hung


class ExportError(RuntimeError):
    """The export process crashed, timed out or could not start; the page's row carries the message."""


def _parse_and_export(task: Task, output: str | Generation, stem: str, image: Callable | None = None) -> tuple:
    """("ok", paths, problems) or ("error", message): what the child answers for one page. `output` is the
    decoded text, or the whole `Generation` (with its tokens' probabilities, for `task.parse_generation`);
    `image`, for a task that `export_wants_image`, loads the page (here: a page that crashes its decoder
    costs only this process)."""
    try:
        parsed = task.parse_generation(output if isinstance(output, Generation) else Generation(output))
        paths = task.export(parsed, stem, image=image()) if image is not None else task.export(parsed, stem)
        return "ok", [str(p) for p in paths], [str(p) for p in parsed.problems]
    except Exception as e:  # noqa: BLE001  reported in the page's row
        return "error", f"{type(e).__name__}: {e}"


def _export_child(fd: int) -> None:
    """The child's loop: a pickled task first, then (output, stem, image) jobs until None or end of input."""
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as Ctrl-C (another session): the parent stops this process
    conn = Connection(fd)
    try:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent stopped before sending work (e.g. its model failed to load)
            return
        except Exception as e:  # noqa: BLE001  e.g. the task's class cannot be imported here
            conn.send(("fatal", f"cannot set up the task in the export process ({type(e).__name__}: {e})"))
            return
        conn.send(("ready",))
        while True:
            job = conn.recv()
            if job is None:
                return
            conn.send(_parse_and_export(task, *job))
    except (EOFError, OSError):  # the parent is gone: nobody is left to tell
        return


_CHILD = ("import sys, json; sys.path[:0] = json.loads(sys.argv[2]); "
          "from docvlm.export_worker import _export_child; _export_child(int(sys.argv[1]))")


class ExportWorker:
    """Runs `task.parse` + `task.export` for one page at a time in a child Python process.

    The exporters call native renderers (verovio, cairosvg, RDKit) that can abort or segfault on odd model
    output, which would otherwise end the whole run. A child that dies, or overruns `timeout`, fails only
    the page it was on; the next page starts a new child. The child is a plain subprocess talking over a
    socket pair (no multiprocessing start method, so the caller's `__main__` is never re-imported); it
    runs in its own session, so Ctrl-C reaches only the parent, which then stops it. Where that cannot
    work (not POSIX; a task that cannot be pickled, or whose class the child cannot import, such as one
    defined in `__main__`), exports run in this process, unprotected, with a warning.
    """

    def __init__(self, task: Task, timeout: float = 300.0):
        self.task = task
        self.timeout = timeout
        self.isolated = True
        self._process = None
        self._conn = None
        self._ready = False
        if os.name != "posix":
            self._unprotected("no POSIX subprocess support here")
        elif type(task).__module__ == "__main__":
            self._unprotected(f"the task class {type(task).__qualname__} is defined in __main__")
        else:
            import pickle

            try:
                pickle.dumps(task)
            except Exception as e:  # noqa: BLE001
                self._unprotected(f"the task cannot be pickled ({type(e).__name__}: {e})")

    def _unprotected(self, reason: str) -> None:
        self.isolated = False
        print(f"docvlm: warning: parse and export run in this process, unprotected from crashes: {reason}",
              file=sys.stderr)

    def start(self) -> None:
        """Start the child (it imports while the caller goes on: the handshake is read on first use)."""
        if not self.isolated or self._process is not None:
            return
        import socket
        import subprocess
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        path = [p or os.getcwd() for p in sys.path]
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(theirs.fileno()), json.dumps(path)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send(self.task)
        self._ready = False

    def export(self, output: str | Generation, stem: Path, image: Callable | None = None
               ) -> tuple[list[str], list[str]]:
        """(written paths, parse problems) of a decoded text or `Generation` (`_parse_and_export`, with `image`, a
        picklable callable that loads the page); raises `ExportError` when export failed, crashed or timed out."""
        if not self.isolated:
            reply = _parse_and_export(self.task, output, str(stem), image)
        else:
            self.start()
            if not self._ready:
                # importing the task's libraries in a busy machine is slow: that is not the page's time
                reply = self._receive(max(self.timeout, STARTUP_TIMEOUT), "starting the export process")
                if reply[0] != "ready":  # the child cannot rebuild the task
                    self._stop(kill=True)
                    self._unprotected(reply[1])
                    return self.export(output, stem, image)
                self._ready = True
            try:
                self._conn.send((output, str(stem), image))
            except OSError:
                pass  # the child died: reported by _receive
            reply = self._receive(self.timeout, "parse/export")
        if reply[0] == "error":
            raise ExportError(f"export failed ({reply[1]})")
        return reply[1], reply[2]

    def _receive(self, timeout: float, what: str) -> tuple:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._stop(kill=True)
                raise ExportError(f"{what} took longer than {timeout:g} s and was stopped")
            try:
                if self._conn.poll(min(remaining, 0.5)):
                    return self._conn.recv()
            except (EOFError, OSError):
                break
            if self._process.poll() is not None and not self._conn.poll(0):
                break
        code = self._stop()
        raise ExportError(f"the export process crashed ({_describe_exit(code)}) on this page's output; "
                          f"files it wrote for the page may be incomplete")

    def _stop(self, kill: bool = False) -> int | None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            if not kill:
                try:
                    conn.send(None)
                except OSError:
                    pass  # the child is gone already: nothing to ask it to stop
            conn.close()
        if process is None:
            return None
        if kill:
            process.kill()
        try:
            return process.wait(5)
        except Exception:  # noqa: BLE001  subprocess.TimeoutExpired
            process.kill()
            return process.wait()

    def close(self) -> None:
        self._stop()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


class ExportPool:
    """`workers` `ExportWorker`s driven from threads, so that parsing and export overlap decoding.

    `submit(output, stem, image)` returns a future of (written paths, parse problems) that raises `ExportError` as
    `ExportWorker.export` does: a crash or a hang costs only that page, whatever the number of workers.
    """

    def __init__(self, task: Task, workers: int = 2, timeout: float = 300.0):
        import queue
        from concurrent.futures import ThreadPoolExecutor

        self._idle: queue.SimpleQueue[ExportWorker] = queue.SimpleQueue()
        self._workers = [ExportWorker(task, timeout) for _ in range(workers)]
        for worker in self._workers:
            worker.start()
            self._idle.put(worker)
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docvlm-export")

    def _run(self, output: str | Generation, stem: Path, image: Callable | None) -> tuple[list[str], list[str]]:
        worker = self._idle.get()
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
            return worker.export(output, stem, image)
        finally:
            self._idle.put(worker)

    def submit(self, output: str | Generation, stem: Path, image: Callable | None = None):
        return self._threads.submit(self._run, output, stem, image)

    def close(self, cancel: bool = False) -> None:
        """Wait for the exports under way (dropping queued ones with `cancel`), then stop the workers."""
        self._threads.shutdown(wait=True, cancel_futures=cancel)
        for worker in self._workers:
            worker.close()
