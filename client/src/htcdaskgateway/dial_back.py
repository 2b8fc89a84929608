"""Dial every HTCondor worker that joins, as the scheduler will to gather from it.

A worker joins by dialling the scheduler (through the gateway's proxy); the
scheduler dials the worker only later, at the address the worker gave
(``worker.host`` / ``worker.contact-address``), to gather results. A worker
the scheduler cannot reach there counts as joined, and the first
computation hangs ("Couldn't gather keys") with nothing to say why. So each
joining worker is dialled once, and one that does not answer is reported
(``unreachable``: worker name -> "address: why").

Not amid a scale-up: a dial is a TLS handshake in the scheduler's one
event loop, as many as the registrations it would slow, with the workers
still starting beside it. A worker is dialled once the joins have paused
(``QUIET`` seconds with none) or ``LONGEST_WAIT`` seconds after it joined,
whichever is first. The connection is then left in the scheduler's pool,
where the first gather or ``client.run`` finds it open instead of dialling
again. (On the 2-core test machine, 10 workers joining together reached
their scheduler no sooner for it, within the runs' noise: 2.81 s to 10
workers in 8 rounds with the dials deferred or at each join, 2.87 s with
none.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

# Seconds a joining worker's address may take to answer the scheduler.
PROBE_TIMEOUT = 10.0
# Seconds without a join after which the joined workers are dialled.
QUIET = 0.5
# Seconds after its join by which a worker is dialled, joins or not.
LONGEST_WAIT = 5.0


def due(
    joined: Mapping[str, float], last_join: float, now: float,
    quiet: float = QUIET, longest_wait: float = LONGEST_WAIT,
) -> list[str]:  # fmt: skip
    """The addresses among ``joined`` (address -> when it joined) to dial ``now``."""
    if now - last_join >= quiet:
        return list(joined)
    return [address for address, at in joined.items() if now - at >= longest_wait]


def next_look(
    joined: Mapping[str, float], last_join: float,
    quiet: float = QUIET, longest_wait: float = LONGEST_WAIT,
) -> float:  # fmt: skip
    """When some of ``joined`` is due next (the clock's time)."""
    return min(last_join + quiet, min(joined.values()) + longest_wait)


class DialBack:
    """The dials of one scheduler's joining workers, and who did not answer.

    ``pool`` is the scheduler's connection pool (``Scheduler.rpc``): a dial
    goes through it, with the scheduler's own TLS settings, and the
    connection stays there for the scheduler's later use.
    """

    def __init__(
        self,
        pool: Any,
        quiet: float = QUIET,
        longest_wait: float = LONGEST_WAIT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.pool = pool
        self.quiet, self.longest_wait = quiet, longest_wait
        self.clock, self.sleep = clock, sleep
        self.unreachable: dict[str, str] = {}
        self._names: dict[str, str] = {}  # address -> name, of the workers present
        self._joined: dict[str, float] = {}  # address -> when, of those not dialled yet
        self._last_join = 0.0
        self._waiter: asyncio.Task[None] | None = None
        self._dials: set[asyncio.Task[None]] = set()

    def joined(self, address: str, name: str) -> None:
        now = self.clock()
        self._names[address] = name
        self._joined[address] = self._last_join = now
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.ensure_future(self._dial_when_due())

    def left(self, address: str) -> None:
        self._joined.pop(address, None)
        name = self._names.pop(address, None)
        if name is not None:
            self.unreachable.pop(name, None)

    async def close(self) -> None:
        for task in [self._waiter, *self._dials]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _dial_when_due(self) -> None:
        while self._joined:
            now = self.clock()
            for address in due(self._joined, self._last_join, now, self.quiet, self.longest_wait):
                del self._joined[address]
                task = asyncio.ensure_future(self._dial(address))
                self._dials.add(task)
                task.add_done_callback(self._dials.discard)
            if self._joined:
                wake = next_look(self._joined, self._last_join, self.quiet, self.longest_wait)
                await self.sleep(max(0.0, wake - now))

    async def _dial(self, address: str) -> None:
        # The pool's connect and reuse are the pair each of the scheduler's
        # own calls to a worker goes through; distributed documents them as
        # for its internal use, and no public call leaves a connection in
        # the pool. Only here.
        try:
            comm = await self.pool.connect(address, timeout=PROBE_TIMEOUT)
        except Exception as exc:
            name = self._names.get(address)
            if name is not None:  # still there
                logger.warning("Worker %s cannot be reached at %s: %s", name, address, exc)
                self.unreachable[name] = f"{address}: {exc}"
            return
        self.pool.reuse(address, comm)
        name = self._names.get(address)
        if name is not None:
            self.unreachable.pop(name, None)
