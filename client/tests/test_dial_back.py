"""The scheduler's dials of joining HTCondor workers: when, through what, who did not answer."""

import asyncio

from htcdaskgateway.dial_back import DialBack, due, next_look


def test_nothing_is_due_while_workers_keep_joining_and_everything_once_they_pause():
    joined = {"tls://a:1": 0.0, "tls://b:1": 0.2, "tls://c:1": 0.4}
    assert due(joined, last_join=0.4, now=0.8, quiet=0.5, longest_wait=5) == []
    assert due(joined, last_join=0.4, now=0.9, quiet=0.5, longest_wait=5) == list(joined)
    assert next_look(joined, last_join=0.4, quiet=0.5, longest_wait=5) == 0.9


def test_a_worker_is_dialled_by_its_longest_wait_even_if_joins_go_on():
    joined = {"tls://a:1": 0.0, "tls://b:1": 4.8}
    assert due(joined, last_join=4.8, now=5.0, quiet=0.5, longest_wait=5) == ["tls://a:1"]
    assert next_look({"tls://b:1": 4.8}, last_join=4.8, quiet=0.5, longest_wait=5) == 5.3


class FakePool:
    """A connection pool whose dials succeed, or fail for the addresses in ``dead``."""

    def __init__(self, dead: set[str] = frozenset()) -> None:
        self.dead = dead
        self.dialled: list[tuple[float, str]] = []
        self.kept: list[str] = []
        self.clock: FakeClock | None = None

    async def connect(self, address: str, timeout: float | None = None) -> str:
        assert timeout is not None
        self.dialled.append((self.clock.now if self.clock else 0.0, address))
        if address in self.dead:
            raise OSError("Timed out trying to connect")
        return f"comm to {address}"

    def reuse(self, address: str, comm: str) -> None:
        assert comm == f"comm to {address}"
        self.kept.append(address)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _dial_back(pool: FakePool) -> tuple[DialBack, FakeClock]:
    clock = FakeClock()
    pool.clock = clock
    return DialBack(pool, quiet=0.5, longest_wait=5.0, clock=clock, sleep=clock.sleep), clock


def test_workers_joining_together_are_dialled_after_the_joins_pause_and_the_connections_kept():
    async def run():
        pool = FakePool()
        dials, clock = _dial_back(pool)
        for i, at in enumerate([0.0, 0.2, 0.4]):
            # All join before the waiter first looks (at 0.4): it waits for the pause.
            clock.now = at
            dials.joined(f"tls://w{i}:1", f"htc-1.{i}")
        await _settle()
        assert [address for _, address in pool.dialled] == [
            "tls://w0:1",
            "tls://w1:1",
            "tls://w2:1",
        ]
        assert all(at >= 0.9 for at, _ in pool.dialled), pool.dialled
        assert pool.kept == [address for _, address in pool.dialled]
        assert dials.unreachable == {}
        await dials.close()

    asyncio.run(run())


def test_a_worker_that_does_not_answer_is_reported_until_it_leaves():
    async def run():
        pool = FakePool(dead={"tls://astray:1"})
        dials, _ = _dial_back(pool)
        dials.joined("tls://fine:1", "htc-1.0")
        dials.joined("tls://astray:1", "htc-1.1")
        await _settle()
        assert dials.unreachable == {"htc-1.1": "tls://astray:1: Timed out trying to connect"}
        dials.left("tls://astray:1")
        assert dials.unreachable == {}
        await dials.close()

    asyncio.run(run())


def test_a_worker_that_left_before_its_dial_is_not_dialled():
    async def run():
        pool = FakePool()
        dials, _ = _dial_back(pool)
        dials.joined("tls://gone:1", "htc-1.0")
        dials.left("tls://gone:1")
        dials.joined("tls://here:1", "htc-1.1")
        await _settle()
        assert [address for _, address in pool.dialled] == ["tls://here:1"]
        await dials.close()

    asyncio.run(run())
