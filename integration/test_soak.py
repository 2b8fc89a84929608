"""The soak (integration/soak.py) for SOAK_MINUTES (2 by default; `make soak`
runs it longer): a running analysis while the stack's services restart, the
pool pauses and workers are evicted and killed. Nothing wrong, nothing lost,
no live cluster stopped, nothing left behind. Runs last: it restarts the stack's services."""

from __future__ import annotations

import os

import soak


def test_a_running_analysis_loses_nothing_to_the_pools_ordinary_events(record_figure):
    minutes = float(os.environ.get("SOAK_MINUTES", "2"))
    report = soak.Soak(minutes, seed=int(os.environ.get("SOAK_SEED", "26"))).run()
    lines = report.lines(minutes)
    for line in lines:
        record_figure(line)
    assert report.checked > 0, "no computation was checked"
    assert sum(report.events.values()) > 0, "no event was staged"
    assert not report.failed, "\n".join(lines)
