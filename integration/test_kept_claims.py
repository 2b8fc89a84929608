"""Kept claims (issue 28): a second cluster's workers start on the slots the
first cluster's workers held, with no negotiation, each with its own
cluster's credentials.

The first cluster starts on the test pool; then the pool negotiates every
60 s (integration/pool/production-like.conf, laid over the test pool by
pool-profile), so a job that starts within seconds of its submit did so on
a kept claim. The evidence is not timing
but the schedd's own record: each running job's ``PublicClaimId`` names
the claim it runs on, and the second cluster's jobs run on the very claims
the first cluster's held (``NumJobMatches`` does not tell: the schedd sets
it for a kept claim too).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import cloudpickle
import pytest

from conftest import TARGET, queue, stack_service, wait_for

pytestmark = pytest.mark.skipif(TARGET == "k8s", reason="the compose pool's profile")

KEEP = 30  # seconds: longer than the gap between the clusters (about 5 s); the slots' idle after
WORKERS = 2

# The functions below run on the workers, which cannot import this module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _pool_profile(name: str) -> None:
    result = stack_service("pool").exec_run(["/etc/htcdaskgateway/pool/pool-profile", name])
    assert result.exit_code == 0, result.output.decode()


@pytest.fixture
def pool_profile() -> Iterator[Callable[[str], None]]:
    """Lay a profile over the test pool; the test pool again afterwards."""
    try:
        yield _pool_profile
    finally:
        _pool_profile("test")


def _running_claims(cluster_name: str) -> dict[str, str]:
    """The claim (``PublicClaimId``, secret part elided) of each running worker job -> its slot."""
    ads = queue(cluster_name, ["PublicClaimId", "RemoteHost", "JobStatus", "KeepClaimIdle"])
    assert all(ad.get("KeepClaimIdle") == KEEP for ad in ads), "each job asks for its kept claim"
    return {
        str(ad["PublicClaimId"]): str(ad["RemoteHost"]) for ad in ads if ad.get("JobStatus") == 2
    }


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
    new_cluster, pool_profile, record_figure
):
    kept = {"worker": {"keep-claim-idle": KEEP}}
    first = new_cluster(htcondor=kept)
    first.scale(WORKERS)
    first.wait_for_workers(WORKERS, timeout=180)
    first_claims = _running_claims(first.name)
    assert len(first_claims) == WORKERS
    # From here the negotiator waits 20-60 s between cycles: a job that
    # runs sooner can only have been given a kept claim.
    pool_profile("production-like")
    first_key = first.security.tls_key.strip().encode()
    first.shutdown()
    wait_for(lambda: not queue(first.name), "the first cluster's jobs to leave", 60)

    second = new_cluster(htcondor=kept)
    second.scale(WORKERS)
    second.wait_for_workers(WORKERS, timeout=60)
    second_claims = _running_claims(second.name)
    same = set(second_claims) == set(first_claims)
    record_figure(
        f"second cluster's jobs on {sorted(second_claims.values())}, the first's on "
        f"{sorted(first_claims.values())}; the same claims: {same}"
    )
    assert same, (
        f"the second cluster's jobs run on the first's claims: {second_claims} vs {first_claims}"
    )

    client = second.get_client()
    presented = client.run(_presented_certificate)
    assert set(presented.values()) == {second.security.tls_cert}, "its own cluster's certificate"
    second_key = second.security.tls_key.strip().encode()
    for worker, files in client.run(_sandbox_files).items():
        # The scan sees the sandbox: its own cluster's key is there.
        assert any(second_key in data for data in files.values()), f"{worker}: {sorted(files)}"
        leaked = [path for path, data in files.items() if first_key in data]
        assert not leaked, f"{worker} holds the first cluster's key in {leaked}"
    client.close()


def test_the_operators_cap_refuses_a_longer_keep_before_anything_is_submitted(gateway):
    from htcdaskgateway import SettingError

    # The chart publishes max-keep-claim-idle in the analysts' client config.
    capped = {"max-keep-claim-idle": KEEP}
    before = {c.name for c in gateway.list_clusters()}
    with pytest.raises(SettingError, match=rf"keep-claim-idle is {KEEP + 1} s.*at most {KEEP} s"):
        gateway.new_cluster(htcondor={**capped, "worker": {"keep-claim-idle": KEEP + 1}})
    assert {c.name for c in gateway.list_clusters()} == before, "no cluster was started"
