"""The schedd client against a collector that never answers: a real timeout,
and an event loop that keeps running meanwhile (the calls run in a helper
process, so a binding that holds the interpreter's lock cannot stall it)."""

import asyncio
import itertools
import socket
import time

import pytest

from htcdaskgateway.errors import ScheddUnavailableError
from htcdaskgateway.schedd import ScheddClient


@pytest.fixture
def silent_collector():
    """A TCP port that accepts connections and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"127.0.0.1:{server.getsockname()[1]}"


def test_a_schedd_call_that_is_never_answered_times_out_and_the_loop_runs_on(silent_collector):
    async def body():
        client = ScheddClient(collector=silent_collector, timeout=2)
        ticks = []

        async def tick():
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        ticking = asyncio.ensure_future(tick())
        started = time.monotonic()
        with pytest.raises(ScheddUnavailableError, match="did not answer within 2 s"):
            await client.owner()
        took = time.monotonic() - started
        # Again: the stuck helper was replaced, the next call gets its own 2 s.
        with pytest.raises(ScheddUnavailableError, match="did not answer within 2 s"):
            await client.jobs("true")
        ticking.cancel()
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        return took, max(gaps)

    took, longest_gap = asyncio.run(body())
    assert 2 <= took < 5
    assert longest_gap < 0.5, f"the event loop stalled {longest_gap:.1f} s"


def test_the_helper_process_outlives_an_interrupt_sent_to_the_notebook_kernel_group():
    import os
    import signal

    from htcdaskgateway.condor_calls import CondorCallError
    from htcdaskgateway.helper_process import HelperProcess

    helper = HelperProcess()
    try:
        with pytest.raises(CondorCallError, match="TypeError"):
            helper.call("no_such_call", (), timeout=30)
        child = helper._child
        assert child is not None
        time.sleep(0.5)  # its imports done and the signal handler set
        os.kill(child.pid, signal.SIGINT)
        time.sleep(0.3)
        assert child.poll() is None, "SIGINT ended the helper process"
        with pytest.raises(CondorCallError):
            helper.call("no_such_call", (), timeout=30)
        assert helper._child is child, "the helper was restarted"
    finally:
        helper.stop()
