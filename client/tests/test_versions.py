"""Version agreement between client, scheduler and workers: said once, with the fix."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from htcdaskgateway import __version__
from htcdaskgateway.jobs import JobId
from htcdaskgateway.versions import (
    VersionCheck,
    VersionMismatchWarning,
    differences,
    local_versions,
    mismatch_message,
)

MINE = {"python": "3.13.5.final.0", "dask": "2026.8.0", "distributed": "2026.8.0",
        "cloudpickle": "3.1.1", "numpy": "2.3.0"}  # fmt: skip


def test_only_pickle_relevant_differences_count():
    assert differences(MINE, {**MINE, "python": "3.13.9.final.0", "numpy": "1.26"}) == {}
    assert differences(MINE, {**MINE, "python": "3.11.2.final.0"}) == {
        "python": ("3.13.5.final.0", "3.11.2.final.0")
    }
    assert set(differences(MINE, {**MINE, "dask": "2025.1.0", "cloudpickle": None})) == {
        "dask",
        "cloudpickle",
    }


def test_the_message_names_both_sides_every_differing_worker_group_and_the_images():
    old = {**MINE, "python": "3.11.2.final.0", "dask": "2025.1.0"}
    workers = {f"htc-{i}.0@s": old for i in range(5)} | {"htc-9.0@s": MINE}
    message = mismatch_message(MINE, MINE, workers)
    assert message is not None
    assert "This client runs Python 3.13.5, dask 2026.8.0" in message
    assert "worker(s) htc-0.0@s, htc-1.0@s, htc-2.0@s and 2 more run Python 3.11.2" in message
    assert "htc-9.0@s" not in message and "scheduler runs" not in message
    assert f"htcdaskgateway/worker:{__version__}" in message
    assert "gateway.htcondor.worker.image" in message
    assert "scheduler runs Python 3.11.2" in (mismatch_message(MINE, old, {}) or "")
    assert mismatch_message(MINE, MINE, {"htc-1.0@s": MINE}) is None


def test_the_check_warns_once_and_asks_again_only_when_workers_joined():
    async def body():
        replies = [{"scheduler": MINE, "workers": {}}]
        asked = []

        async def ask():
            asked.append(1)
            return replies[-1]

        check = VersionCheck(ask, MINE)
        assert await check.check(0) is None
        assert await check.check(0) is None
        assert len(asked) == 1, "asked again with no new worker"
        replies.append({"scheduler": MINE, "workers": {"htc-1.0@s": {**MINE, "dask": "1.0"}}})
        with pytest.warns(VersionMismatchWarning, match="htc-1.0@s run .*dask 1.0"):
            assert await check.check(1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second warning would raise here
            replies.append({"scheduler": MINE, "workers": {"htc-2.0@s": {**MINE, "dask": "2.0"}}})
            assert await check.check(2)
        assert len(asked) == 2, "asked again after it had warned"

    asyncio.run(body())


def test_the_watcher_warns_once_when_a_mismatched_worker_joins():
    from .fakes import FakeSchedulerLink
    from .test_reconciler import _watcher, make

    async def body():
        _, link, reconciler = make()
        link.worker_versions[JobId("7.0")] = {**local_versions(), "distributed": "2020.1.0"}
        watcher = _watcher(reconciler, link, "alice", interval=0.05)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            watcher.start()
            await asyncio.sleep(0.2)
            assert not caught, "warned with no mismatched worker"
            link.workers |= {JobId("7.0"), JobId("8.0")}
            await asyncio.sleep(0.3)
            link.workers |= {JobId("9.0")}
            link.worker_versions[JobId("9.0")] = {**local_versions(), "dask": "2020.1.0"}
            await asyncio.sleep(0.3)
            await watcher.stop()
        mismatches = [w for w in caught if issubclass(w.category, VersionMismatchWarning)]
        assert len(mismatches) == 1, [str(w.message) for w in mismatches]
        assert "htc-7.0 run" in str(mismatches[0].message)
        assert "distributed 2020.1.0" in str(mismatches[0].message)
        assert isinstance(link, FakeSchedulerLink)

    asyncio.run(body())
