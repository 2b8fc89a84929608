"""Load: 10 clusters of 10 HTCondor workers at once, five per user, two users.

Each user's clusters run in that user's own process (tenant_load.py) on
the JupyterHub-authenticated gateway. Every cluster computes a checked
result; afterwards every cluster is stopped and no job is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import nothing_queued, user_command, wait_for

USERS = ("alice", "bob")
CLUSTERS_PER_USER = 5
WORKERS = 10
BOUND = 900  # seconds for the whole run; loopback only
SCRIPT = Path(__file__).with_name("tenant_load.py")


def expected_total(workers: int) -> int:
    return sum(range(4 * workers * 1000))


def test_ten_clusters_of_ten_workers_two_users(record_figure):
    started = time.monotonic()
    runs = {
        user: subprocess.Popen(
            user_command(user, sys.executable, str(SCRIPT), str(CLUSTERS_PER_USER), str(WORKERS)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/tmp",
        )
        for user in USERS
    }
    results = {}
    for user, run in runs.items():
        out, err = run.communicate(timeout=BOUND)
        assert run.returncode == 0, f"{user}: {err[-3000:]}"
        results[user] = json.loads(out.strip().splitlines()[-1])
    took = time.monotonic() - started

    names = [name for per_user in results.values() for name in per_user]
    assert len(set(names)) == len(USERS) * CLUSTERS_PER_USER
    for user, per_user in results.items():
        for name, result in per_user.items():
            assert result["total"] == expected_total(WORKERS), (user, name, result)
    joined = sorted(r["joined_s"] for per_user in results.values() for r in per_user.values())
    record_figure(
        f"load: {len(names)} clusters x {WORKERS} workers (2 users) done in {took:.0f} s; "
        f"time to {WORKERS} workers per cluster min {joined[0]} / max {joined[-1]} s"
    )

    for name in names:
        wait_for(lambda n=name: nothing_queued(n), f"jobs of {name} to leave", 60)
    # Every cluster is stopped at the gateway (checked per user).
    for user in USERS:
        listing = subprocess.run(
            user_command(user, "htcdaskgateway", "list"), capture_output=True, text=True
        )
        assert listing.returncode == 0, listing.stderr
        assert not any(name in listing.stdout for name in names), listing.stdout
