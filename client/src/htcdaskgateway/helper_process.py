"""HTCondor calls in a child process of the client, with a real timeout.

Why a process: the htcondor2 bindings can keep the interpreter's lock
while they wait for a schedd. Measured here with the pool's container
paused: one job query in a worker thread stalled the client's event loop
for 7.1 s, the whole time the schedd did not answer. A stalled loop renews
no lease, answers no widget and moves no dask future, so a slow schedd
would stop a live analyst's cluster. In a child process a call can only
make its caller wait, never the client's other work; and a call that
outlasts its timeout is ended by killing the child (the next call starts
a new one), not left holding a thread.

The child is ``python -m htcdaskgateway.helper_process``: it imports only
``condor_calls`` (no dask), and never the analyst's own ``__main__``.
Requests and answers are pickles over two pipes; the child exits when its
pipe closes, so it never outlives the client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from .condor_calls import UNAVAILABLE, CondorCallError, call


class HelperProcess:
    """One child process that runs ``condor_calls`` calls, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._answers: Connection | None = None

    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self._child = subprocess.Popen(
            [sys.executable, "-m", __name__, str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._requests = Connection(to_child_w, readable=False)
        self._answers = Connection(from_child_r, writable=False)

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        for connection in (self._requests, self._answers):
            if connection is not None:
                connection.close()
        if self._child is not None:
            self._child.kill()
            self._child.wait()
        self._child = self._requests = self._answers = None

    def call(self, name: str, args: tuple[Any, ...], timeout: float) -> Any:
        """Run ``condor_calls.call(name, *args)`` in the child; blocks up to ``timeout`` s."""
        with self._lock:
            if self._child is None or self._child.poll() is not None:
                self._stop()
                self._start()
            assert self._requests is not None and self._answers is not None
            try:
                self._requests.send((name, args))
                answered = self._answers.poll(timeout)
                if answered:
                    status, value = self._answers.recv()
            except (EOFError, OSError) as exc:
                self._stop()
                raise CondorCallError(
                    UNAVAILABLE, f"The HTCondor helper process failed: {exc!r}"
                ) from None
            if not answered:
                self._stop()  # the only way to end a call the bindings cannot cancel
                raise TimeoutError(name)
        if status == "error":
            raise value
        return value


def serve(requests: Connection, answers: Connection) -> None:
    while True:
        try:
            name, args = requests.recv()
        except EOFError:
            return  # the client is gone
        try:
            answers.send(("ok", call(name, *args)))
        except CondorCallError as exc:
            answers.send(("error", exc))
        except Exception as exc:  # a bug here must reach the client, not end the child
            answers.send(("error", CondorCallError("failed", f"{type(exc).__name__}: {exc}")))


if __name__ == "__main__":
    # A notebook's "interrupt kernel" (and jupyter_client's shutdown) sends
    # SIGINT to the kernel's whole process group: the client's calls must
    # outlive an interrupted cell, and the child ends when its pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(
        Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
    )
