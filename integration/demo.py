"""The seed's usage, run against the local stack by `make demo`.

Five workers as HTCondor jobs compute the sum of squares of the first
N integers with dask.array; the result is checked against the formula.
"""

import time

import dask.array as da

from htcdaskgateway import HTCGateway

N = 2_000_000  # the sum stays within int64

gateway = HTCGateway()
cluster = gateway.new_cluster()
print(f"cluster {cluster.name} started")
started = time.monotonic()
cluster.scale(5)
client = cluster.get_client()
cluster.wait_for_workers(5, timeout=120)  # shows the jobs' progress on stderr
print(f"5 workers connected in {time.monotonic() - started:.1f} s:")
for job in cluster.worker_jobs():
    print(f"  HTCondor job {job.job_id} ({job.status.name.lower()})")

x = da.arange(N, chunks=N // 40, dtype="int64")
total = int((x**2).sum().compute())
expected = (N - 1) * N * (2 * N - 1) // 6
workers = {w["name"] for w in client.scheduler_info()["workers"].values()}
print(f"sum of squares below {N:,} = {total:,} (expected {expected:,}) on {sorted(workers)}")
assert total == expected, "wrong result"

cluster.shutdown()
gateway.close()
print("cluster shut down; its HTCondor jobs are removed")
