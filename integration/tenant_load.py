"""One user's share of the load test: K clusters of N workers at once.

Run as ``python tenant_load.py K N`` by test_load.py, once per user, with
that user's gateway settings and tokens in the environment. Prints one JSON
line: per cluster, its result and how long it took to get its workers.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from htcdaskgateway import HTCGateway, HTCGatewayCluster

WORKER_TIMEOUT = 400


def work(cluster: HTCGatewayCluster, n: int) -> dict[str, object]:
    started = time.monotonic()
    cluster.scale(n)
    cluster.wait_for_workers(n, timeout=WORKER_TIMEOUT)
    joined = time.monotonic() - started
    client = cluster.get_client()
    # One task per worker and then some, each summing its own range.
    futures = client.map(lambda i: sum(range(i * 1000, (i + 1) * 1000)), range(4 * n))
    total = client.submit(sum, futures).result()
    workers_used = len(client.who_has(futures))
    client.close()
    return {"total": total, "joined_s": round(joined, 1), "tasks": workers_used}


def main(clusters: int, workers: int) -> None:
    with HTCGateway() as gateway:
        started = [gateway.new_cluster() for _ in range(clusters)]
        try:
            with ThreadPoolExecutor(clusters) as pool:
                results = list(pool.map(lambda c: work(c, workers), started))
        finally:
            for cluster in started:
                cluster.shutdown()
    print(json.dumps({c.name: r for c, r in zip(started, results, strict=True)}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
