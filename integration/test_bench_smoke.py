"""The benchmark in smoke mode (tiny N, one repeat): it runs and its figures make sense."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_bench_smoke(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "run.py", "--smoke", "--out", str(tmp_path)],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ours/jq" in done.stdout and "proxy/direct" in done.stdout
    (result_file,) = tmp_path.glob("bench-*.json")
    results = json.loads(result_file.read_text())
    for row in results["p1"].values():
        for contender in ("floor", "bare workers", "ours", "jobqueue"):
            assert row[contender]["min"] > 0
    # A missed P1 ratio prints its limit: against the bare workers (no tool
    # at all) when the cores were busy, from the phases when they were idle.
    missed = [row for row in results["p1"].values() if _ratio(row, "ours", "jobqueue") > 0.8]
    limits = ("limit: with no tool at all", "limit: the cores were mostly idle")
    assert sum(done.stdout.count(limit) for limit in limits) == len(missed), done.stdout
    # Phases come in order (the schedd learns "running" late, so it is not compared).
    for row in results["phases"].values():
        for contender, phases in row.items():
            order = [phases[p] for p in ("queued", "process started", "registered")]
            assert None not in order and order == sorted(order), (contender, phases)
    assert "Phases of scale(N)" in done.stdout
    assert results["p3"]["proxy_mb_s"]["median"] > 0
    assert results["p4"]["ours"]["median"] > 0
    p6 = results["p6"]
    assert p6["n"] == 20 and 0 < p6["scale_returned_s"] <= p6["all_queued_s"]
    assert p6["client_rss_before_mb"] > 0 and p6["watcher_look_s"] > 0
    assert "P6 scale(20)" in done.stdout
    assert (tmp_path / "workers-over-time.png").stat().st_size > 0


def _ratio(row: dict, a: str, b: str) -> float:
    return row[a]["median"] / row[b]["median"]
