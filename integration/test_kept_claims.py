"""Kept claims (issue 28): a second cluster's workers start on the slots the
first cluster's workers held, with no negotiation, each with its own
cluster's credentials.

The pool negotiates every 60 s here (integration/pool/production-like.conf,
laid over the test pool by pool-profile), so a job that starts within
seconds of its submit did so on a kept claim. The evidence is not timing:
a job the negotiator matched carries ``NumJobMatches``; one the schedd
started on a kept claim has none, and runs on a slot the first cluster's
job ran on (the job's ``RemoteHost``, as in the event log).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from conftest import TARGET, queue, stack_service, wait_for

pytestmark = pytest.mark.skipif(TARGET == "k8s", reason="the compose pool's profile")

KEEP = 120  # seconds; longer than the test's gap between the clusters
WORKERS = 2


def _pool_profile(name: str) -> None:
    result = stack_service("pool").exec_run(["/etc/htcdaskgateway/pool/pool-profile", name])
    assert result.exit_code == 0, result.output.decode()


@pytest.fixture
def production_like_pool() -> Iterator[None]:
    _pool_profile("production-like")
    try:
        yield
    finally:
        _pool_profile("test")


def _running_slots(cluster_name: str) -> dict[str, object]:
    """Slot of each running worker job -> its NumJobMatches (None: no negotiator match)."""
    ads = queue(cluster_name, ["RemoteHost", "NumJobMatches", "JobStatus"])
    return {ad["RemoteHost"]: ad.get("NumJobMatches") for ad in ads if ad.get("JobStatus") == 2}


def _sandbox_files() -> dict[str, bytes]:
    """Every file in this worker's job sandbox (runs on the worker)."""
    root = os.environ["_CONDOR_SCRATCH_DIR"]
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as f:
                    found[path] = f.read()
            except OSError:
                pass
    return found


def _presented_certificate(dask_worker) -> str:  # type: ignore[no-untyped-def]
    with open(dask_worker.security.tls_worker_cert) as f:
        return f.read()


def test_a_second_cluster_starts_on_the_first_clusters_kept_claims(
    new_cluster, production_like_pool, record_figure
):
    kept = {"worker": {"keep-claim-idle": KEEP}}
    first = new_cluster(htcondor=kept)
    first.scale(WORKERS)
    first.wait_for_workers(WORKERS, timeout=180)
    first_slots = _running_slots(first.name)
    assert len(first_slots) == WORKERS
    first_key = first.security.tls_key.strip().encode()
    first.shutdown()
    wait_for(lambda: not queue(first.name), "the first cluster's jobs to leave", 60)

    second = new_cluster(htcondor=kept)
    second.scale(WORKERS)
    second.wait_for_workers(WORKERS, timeout=60)
    second_slots = _running_slots(second.name)
    record_figure(f"second cluster's slots {sorted(second_slots)}; first's {sorted(first_slots)}")
    assert set(second_slots) == set(first_slots), "started on the first cluster's slots"
    assert all(not matches for matches in second_slots.values()), (
        f"no negotiator match (NumJobMatches): {second_slots}"
    )

    client = second.get_client()
    presented = client.run(_presented_certificate)
    assert set(presented.values()) == {second.security.tls_cert}, "its own cluster's certificate"
    for worker, files in client.run(_sandbox_files).items():
        leaked = [path for path, data in files.items() if first_key in data]
        assert not leaked, f"{worker} holds the first cluster's key in {leaked}"
    client.close()
