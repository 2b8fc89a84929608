"""``wait_for_workers()``: follow what the watcher sees until enough workers joined.

The waiter asks neither the schedd nor the scheduler itself: it reads the
watcher's looks (hurried while it waits) and shows progress, and ends
early, with the reason, when the workers cannot come.
"""

from __future__ import annotations

import time

from dask_gateway import GatewayClusterError

from . import view
from .errors import HTCondorError
from .jobs import FAILURES_BEFORE_PAUSE, WorkerJob
from .runtime import ClusterRuntime
from .watch import unreachable_workers_message

# Seconds wait_for_workers() waits on a scheduler that does not answer
# before it reports the cluster lost.
SCHEDULER_SILENCE_LIMIT = 60.0
# Seconds between wait_for_workers()'s progress lines when no look ends sooner.
PROGRESS_PERIOD = 1.0


async def wait_for_workers(
    runtime: ClusterRuntime,
    n: int,
    timeout: float | None,
    progress: view.Progress | view.NotebookProgress | None = None,
) -> None:
    """Return once ``n`` workers have joined; raise why they cannot, or after ``timeout``."""
    name, watcher, tracker = runtime.spec.name, runtime.watcher, runtime.tracker
    deadline = None if timeout is None else time.monotonic() + timeout
    if progress is None:
        progress = view.Progress(view.waiting_title(name, n))
    async with watcher.hurried():
        try:
            # A look that began after the call, so a scale() just made is seen.
            limit = None if deadline is None else max(deadline - time.monotonic(), 0)
            await watcher.fresh_look(limit)
            while True:
                joined, state, jobs = what_the_watcher_saw(runtime)
                failure = runtime.failure_message()
                failures = tracker.failures_in_a_row
                if failures:
                    state += (
                        f"; {failures} ended without serving ({tracker.failures[-1].describe()})"
                    )
                progress.show(joined, n, state)
                if watcher.unreachable:
                    raise GatewayClusterError(
                        unreachable_workers_message(name, watcher.unreachable)
                    )
                if joined >= n:
                    return
                held = [job for job in jobs if job.is_stuck]
                if held:
                    raise HTCondorError(
                        f"{len(held)} worker job(s) of {name} are held and will not "
                        f"start; job {held[0].job_id}: {held[0].hold_reason}"
                    )
                if failure and failures >= min(n, FAILURES_BEFORE_PAUSE):
                    raise HTCondorError(
                        f"{failures} worker job(s) of {name} in a row ended without "
                        f"serving; {failure}"
                    )
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{joined} of {n} workers joined {name} in {timeout} s; {state}"
                    )
                await watcher.next_look(timeout=PROGRESS_PERIOD)
        finally:
            progress.done()


def what_the_watcher_saw(runtime: ClusterRuntime) -> tuple[int, str, list[WorkerJob]]:
    """Joined workers, a summary of the jobs, and the active jobs, as last seen."""
    watcher, reconciler = runtime.watcher, runtime.reconciler
    joined = sum(len(group.connected) for group in runtime.groups.values())
    silent = watcher.scheduler_silence()
    if silent is not None:
        # A scheduler on a crowded host can answer late; only one that
        # stays silent is lost.
        if silent > SCHEDULER_SILENCE_LIMIT:
            raise GatewayClusterError(
                f"The scheduler of {runtime.spec.name} has not answered for {silent:.0f} s"
            )
        return joined, f"the scheduler has not answered for {silent:.0f} s", []
    if isinstance(watcher.round_error, HTCondorError):
        # The schedd may come back before the timeout (a restart): keep
        # waiting, and say why nothing moves.
        return joined, f"HTCondor unavailable: {watcher.round_error}", []
    return joined, view.jobs_summary(reconciler.tracker, reconciler), reconciler.tracker.table
