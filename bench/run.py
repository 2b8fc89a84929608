"""`make bench`: time to workers, scale-call cost, data path and shutdown, side by side.

Runs in the analyst container against the local stack (`make up`). Each
measure is repeated and reported as min / median; ratios use medians.
Writes ``bench-<time>.json`` and ``workers-over-time.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import claims
import measures
import phases

T = TypeVar("T")


def repeat(times: int, what: str, measure: Callable[[], T]) -> list[T]:
    results = []
    for i in range(times):
        print(f"  {what} ({i + 1}/{times})", file=sys.stderr, flush=True)
        results.append(measure())
    return results


def interleaved(times: int, what: str, measures: dict[str, Callable[[], T]]) -> dict[str, list[T]]:
    """Each measure once per round, in turn, for ``times`` rounds.

    The pool's 1 s negotiation cycle and its claims left from the previous
    run shift each run by up to a second; taking the contenders in turn
    spreads that evenly over them.
    """
    results: dict[str, list[T]] = {name: [] for name in measures}
    for i in range(times):
        for name, measure in measures.items():
            print(f"  {what}: {name} ({i + 1}/{times})", file=sys.stderr, flush=True)
            results[name].append(measure())
    return results


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "all": values}


# P1's rounds: its runs move by up to a second with the pool's negotiation
# cycle, so more than the other measures. N=1's target is a median of >= 5;
# with 7 rounds, one run's floor median (0.34 s) sat 0.55 s below the other
# three's (0.89-1.19 s), so N=1 gets 11.
P1_ROUNDS = {1: 11}
P1_ROUNDS_DEFAULT = 5
PHASE_RUNS = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--sizes", type=lambda text: [int(n) for n in text.split(",")],
        help="comma-separated N of P1 and the phases (default 1,10,30)",
    )  # fmt: skip
    parser.add_argument(
        "--claims-sizes", type=lambda text: [int(n) for n in text.split(",") if n],
        help="comma-separated N of the kept-claims rounds on the 60 s pool (default 1,10; "
             "none in --smoke); '' skips them",
    )  # fmt: skip
    args = parser.parse_args(argv)

    sizes = args.sizes or ([1, 2] if args.smoke else [1, 10, 30])
    repeats = 1 if args.smoke else args.repeats
    scale_call_n = 5 if args.smoke else 100
    shutdown_n = 2 if args.smoke else 10
    facility_n = 20 if args.smoke else 1000
    data_mb, chunk_mb, round_trips = (20, 10, 20) if args.smoke else (200, 10, 200)
    results: dict[str, Any] = {
        "smoke": args.smoke, "repeats": repeats, "p1": {}, "p1_cpu": {}, "timelines": {},
        "phases": {},
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"

    def save() -> None:
        # After every measure: a run that fails late keeps what it measured.
        json_path.write_text(json.dumps(results, indent=2))

    for n in sizes:
        print(f"P1 N={n}", file=sys.stderr)
        runs = interleaved(
            repeats if args.smoke else max(repeats, P1_ROUNDS.get(n, P1_ROUNDS_DEFAULT)),
            f"N={n}",
            {
                "floor": lambda n=n: measures.floor(n),
                "bare workers": lambda n=n: measures.bare_workers(n),
                "ours": lambda n=n: measures.p1_ours(n),
                "jobqueue": lambda n=n: measures.p1_jobqueue(n),
            },
        )  # fmt: skip
        results["p1"][n] = {name: summary([r.seconds for r in rs]) for name, rs in runs.items()}
        results["p1_cpu"][n] = {
            name: summary([r.cpu_seconds for r in rs]) for name, rs in runs.items()
        }
        results["timelines"][n] = {name: rs[0].timeline for name, rs in runs.items()}
        print(f"phases N={n}", file=sys.stderr)
        phase_runs = interleaved(
            1 if args.smoke else PHASE_RUNS,
            f"phases N={n}",
            {
                "ours": lambda n=n: measures.phases_ours(n),
                "jobqueue": lambda n=n: measures.phases_jobqueue(n),
            },
        )  # fmt: skip
        results["phases"][n] = {name: phases.median_of(rs) for name, rs in phase_runs.items()}
        save()

    claims_sizes = args.claims_sizes if args.claims_sizes is not None else (
        [] if args.smoke else [1, 10]
    )  # fmt: skip
    if claims_sizes:
        print(f"kept claims on the 60 s pool, N={claims_sizes}", file=sys.stderr)
        results["claims"] = claims.run(claims_sizes, repeats)
        save()

    print("import floor: python -c 'import distributed'", file=sys.stderr)
    floors = measures.import_floor(1 if args.smoke else 5)
    results["import_floor"] = {
        "wall": summary([wall for wall, _ in floors]),
        "cpu": summary([cpu for _, cpu in floors]),
    }
    save()

    print(f"P2 scale({scale_call_n}) call", file=sys.stderr)
    results["p2"] = {
        "n": scale_call_n,
        "floor": summary(repeat(repeats, "floor", lambda: measures.p2_floor(scale_call_n))),
        "ours": summary(repeat(repeats, "ours", lambda: measures.p2_ours(scale_call_n))),
        "ours_first": summary(
            repeat(repeats, "ours, at once", lambda: measures.p2_ours(scale_call_n, settle=0.0))
        ),
        "jobqueue": summary(
            repeat(repeats, "dask-jobqueue", lambda: measures.p2_jobqueue(scale_call_n))
        ),
    }

    print(f"P6 scale({facility_n}) of jobs that stay idle, scale(0), shutdown()", file=sys.stderr)
    results["p6"] = measures.p6_ours(facility_n)
    save()

    print(f"P3 {data_mb} MB in {chunk_mb} MB chunks, {round_trips} round trips", file=sys.stderr)
    pairs = repeat(repeats, "proxy vs direct", lambda: measures.p3(data_mb, chunk_mb, round_trips))
    results["p3"] = {
        "megabytes": data_mb,
        "proxy_mb_s": summary([p.throughput_mb_s for p, _ in pairs]),
        "direct_mb_s": summary([d.throughput_mb_s for _, d in pairs]),
        "proxy_round_trip_ms": summary([p.round_trip_ms for p, _ in pairs]),
        "direct_round_trip_ms": summary([d.round_trip_ms for _, d in pairs]),
    }

    print(f"P4 shutdown with N={shutdown_n}", file=sys.stderr)
    results["p4"] = {
        "n": shutdown_n,
        "ours": summary(repeat(repeats, "ours", lambda: measures.p4_ours(shutdown_n))),
        "jobqueue": summary(
            repeat(repeats, "dask-jobqueue", lambda: measures.p4_jobqueue(shutdown_n))
        ),
    }

    save()
    plot_path = args.out / "workers-over-time.png"
    plot(results["timelines"][max(sizes)], max(sizes), plot_path)
    print(table(results))
    print()
    print(phases.table(results["phases"]))
    if "claims" in results:
        print()
        print(claims.table(results["claims"]))
    print()
    print(targets(results))
    print(f"\nwrote {json_path} and {plot_path}")
    return 0


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}"


def _busy(cpu_seconds: float, wall_seconds: float) -> float:
    """The share of all cores the machine kept busy."""
    return cpu_seconds / (wall_seconds * (os.cpu_count() or 1))


def _busy_share(cpu_seconds: float, wall_seconds: float) -> str:
    return f"{100 * _busy(cpu_seconds, wall_seconds):.0f}%"


CONTENDERS = ("floor", "bare workers", "ours", "jobqueue")


def table(results: dict[str, Any]) -> str:
    lines = [
        "P1 scale(N) to N connected workers (s, min / median; ratios of medians); floor: N bare",
        "sleep jobs running; bare workers: N stock `dask worker` jobs joined a bare scheduler",
        f"{'N':>4} " + " ".join(f"{name:>13}" for name in CONTENDERS)
        + f" {'ours/floor':>10} {'ours/bare':>9} {'bare/jq':>8} {'ours/jq':>8}",
    ]  # fmt: skip
    for n, row in results["p1"].items():
        f, b, o, j = (row[k]["median"] for k in CONTENDERS)
        cells = " ".join(f"{row[k]['min']:5.2f} /{row[k]['median']:6.2f}" for k in CONTENDERS)
        lines.append(
            f"{n:>4} {cells} {_ratio(o, f):>10} {_ratio(o, b):>9} {_ratio(b, j):>8} "
            f"{_ratio(o, j):>8}"
        )
    cores = os.cpu_count() or 1
    lines += [
        "",
        f"P1 the machine's busy CPU over each run (median CPU s; busy share of {cores} cores)",
        f"{'N':>4} " + " ".join(f"{name:>15}" for name in CONTENDERS) + f" {'ours/jq CPU':>12}",
    ]
    for n, row in results["p1_cpu"].items():
        walls = results["p1"][n]
        cells = " ".join(
            f"{row[k]['median']:7.2f} ({_busy_share(row[k]['median'], walls[k]['median']):>4})"
            for k in CONTENDERS
        )
        lines.append(
            f"{n:>4} {cells} {_ratio(row['ours']['median'], row['jobqueue']['median']):>12}"
        )
    floor = results["import_floor"]
    lines += [
        "",
        "A dask worker's least start: `python -c 'import distributed'` run in a worker job "
        f"(median): {floor['wall']['median']:.2f} s, {floor['cpu']['median']:.2f} CPU s",
    ]
    p2 = results["p2"]
    lines += [
        "",
        f"P2 scale({p2['n']}) call until all jobs are queued (s, min / median; floor: the "
        "same number of bare jobs submitted in one transaction; each cluster was "
        f"{measures.SETTLE:g} s old)",
        f"  floor {p2['floor']['min']:.2f} / {p2['floor']['median']:.2f}   "
        f"ours {p2['ours']['min']:.2f} / {p2['ours']['median']:.2f}   "
        f"dask-jobqueue {p2['jobqueue']['min']:.2f} / {p2['jobqueue']['median']:.2f}   "
        f"ours/jq {_ratio(p2['ours']['median'], p2['jobqueue']['median'])}",
        f"  ours called at once after new_cluster() {p2['ours_first']['min']:.2f} / "
        f"{p2['ours_first']['median']:.2f} (it waits for the cluster's credentials job, "
        "which new_cluster() starts spooling in the background)",
    ]
    p6 = results["p6"]
    lines += [
        "",
        f"P6 scale({p6['n']}) of jobs that stay idle (one run)",
        f"  scale() returned {p6['scale_returned_s']:.2f} s, "
        f"all queued {p6['all_queued_s']:.2f} s; "
        f"scale(0) to an empty queue {p6['scale0_empty_s']:.2f} s; "
        f"shutdown() {p6['shutdown_s']:.2f} s",
        f"  watcher's look at {p6['n']} jobs {1000 * p6['watcher_look_s']:.0f} ms; "
        f"schedd spool {p6['spool_bytes_per_job']:.0f} bytes per job",
        f"  client memory (with its helper process) {p6['client_rss_before_mb']:.0f} MB before, "
        f"{p6['client_rss_at_n_mb']:.0f} MB at {p6['n']}, {p6['client_rss_after_mb']:.0f} MB after "
        f"(+{p6['client_rss_after_mb'] - p6['client_rss_before_mb']:.0f} MB)",
    ]
    p3 = results["p3"]
    lines += [
        "",
        f"P3 data path, {p3['megabytes']} MB up and back; small-task round trip (median)",
        f"  throughput MB/s: proxy {p3['proxy_mb_s']['median']:.1f}, "
        f"direct {p3['direct_mb_s']['median']:.1f}, "
        f"proxy/direct {_ratio(p3['proxy_mb_s']['median'], p3['direct_mb_s']['median'])}",
        f"  round trip ms:   proxy {p3['proxy_round_trip_ms']['median']:.2f}, "
        f"direct {p3['direct_round_trip_ms']['median']:.2f}, "
        f"proxy/direct "
        f"{_ratio(p3['proxy_round_trip_ms']['median'], p3['direct_round_trip_ms']['median'])}",
    ]
    p4 = results["p4"]
    lines += [
        "",
        f"P4 shutdown() with {p4['n']} workers until their jobs left the queue (s, min / median)",
        f"  ours {p4['ours']['min']:.2f} / {p4['ours']['median']:.2f}   "
        f"dask-jobqueue {p4['jobqueue']['min']:.2f} / {p4['jobqueue']['median']:.2f}   "
        f"ours/jq {_ratio(p4['ours']['median'], p4['jobqueue']['median'])}",
    ]
    return "\n".join(lines)


def _n1_limit(results: dict[str, Any]) -> str:
    """Why ours - floor at N=1 was above 0.6 s: the pool's spread and a worker's own start."""
    ours = results["phases"].get(1, {}).get("ours") or {}
    after_running = (ours.get("registered") or 0.0) - (ours.get("running") or 0.0)
    floor_runs = results["p1"][1]["floor"]["all"]
    import_wall = results["import_floor"]["wall"]["median"]
    return (
        f"           limit: the floor's own runs spread over {min(floor_runs):.2f}-"
        f"{max(floor_runs):.2f} s (the pool's negotiation; ours' and the floor's runs meet it "
        f"at different phases); after its job runs, ours' worker registered in "
        f"{after_running:.2f} s (phases), and `import distributed` alone takes "
        f"{import_wall:.2f} s, so no dask worker lands less than that after its job runs"
    )


# A run whose cores were busier than this waited on CPU, not on the pool.
CONTENDED_SHARE = 0.5


def _p1_limit(results: dict[str, Any], n: int) -> list[str]:
    """Why a missed P1 ratio cannot be beaten here, from what was measured in the same run.

    When jq's run kept the cores busy, it waited on CPU: it is set against
    the bare workers (no tool at all: stock worker jobs in one submit, a
    bare scheduler) of the same rounds. When they were mostly idle, it
    waited on the pool's negotiation, which moves each run by up to a
    second: the phases then show how little of ours' time is ours.
    """
    row, cpu = results["p1"][n], results["p1_cpu"][n]
    bare, ours, jq = (row[k]["median"] for k in ("bare workers", "ours", "jobqueue"))
    busy = _busy(cpu["jobqueue"]["median"], jq)
    if busy >= CONTENDED_SHARE:
        per_worker = ", ".join(
            f"{name} {cpu[name]['median'] / n:.2f}" for name in ("bare workers", "ours", "jobqueue")
        )
        lines = [
            f"           limit: with no tool at all, {n} jobs running a stock `dask worker`, "
            f"submitted in one transaction, joined a bare scheduler in {bare:.2f} s (median), "
            f"{bare / jq:.2f} x jq; the machine's CPU per worker: {per_worker}",
        ]
        if bare / jq > 0.8:
            return [
                *lines,
                "           so no tool whose workers are dask workers reaches 0.8 here: the "
                "pool's jobs and each worker's own start (its `import distributed`, see the "
                f"phases) fill the cores; ours - bare workers {ours - bare:+.2f} s, jq - bare "
                f"workers {jq - bare:+.2f} s",
            ]
        return [*lines, f"           not a limit: ours' own {ours - bare:+.2f} s is what misses"]
    phase = results["phases"][n]["ours"]
    queued = phase.get("queued") or 0.0
    after_running = (phase.get("registered") or 0.0) - (phase.get("running") or 0.0)
    import_wall = results["import_floor"]["wall"]["median"]
    own = queued + max(0.0, after_running - import_wall)
    need = ours - 0.8 * jq
    lines = [
        f"           limit: the cores were mostly idle ({100 * busy:.0f} %): the time is the "
        "pool's negotiation, which moves each run by up to a second (bare workers, no tool: "
        f"{bare:.2f} s), and one worker's start; ours' own part (phases) is {own:.2f} s: its "
        f"jobs queued after {queued:.2f} s, and from running to registered {after_running:.2f} s "
        f"of which `import distributed` alone takes {import_wall:.2f}",
    ]
    if own < need:
        return [*lines, f"           0.8 x jq needs {need:.2f} s less: more than all of ours' own"]
    return [*lines, f"           not a limit: 0.8 x jq needs {need:.2f} s less, within ours' own"]


def targets(results: dict[str, Any]) -> str:
    """Each of issue 14's targets with its figure; for a missed one, the measured limit."""
    lines = [f"Targets (this machine: {os.cpu_count()} cores)"]

    def check(ok: bool, text: str) -> None:
        lines.append(f"  [{'met' if ok else 'MISSED'}] {text}")

    for n, row in results["p1"].items():
        f, o, j = (row[k]["median"] for k in ("floor", "ours", "jobqueue"))
        check(o / j <= 0.8, f"P1 N={n}: ours/jq {o / j:.2f} <= 0.8")
        if o / j > 0.8:
            cpu = results["p1_cpu"][n]
            ours_cpu, jq_cpu = cpu["ours"]["median"], cpu["jobqueue"]["median"]
            lines.append(
                f"           the machine was busy {_busy_share(ours_cpu, o)} (ours) and "
                f"{_busy_share(jq_cpu, j)} (jq) of its {os.cpu_count()} cores"
            )
            lines += _p1_limit(results, n)
        if n == 1:
            check(o - f <= 0.6, f"P1 N=1: ours - floor {o - f:.2f} s <= 0.6 s")
            if o - f > 0.6:
                lines.append(_n1_limit(results))
    p2 = results["p2"]
    check(
        p2["ours"]["median"] <= 0.1,
        f"P2 scale({p2['n']}) queued in {p2['ours']['median']:.2f} s <= 0.1 s",
    )
    if p2["ours"]["median"] > 0.1:
        lines.append(
            f"           limit: the schedd alone takes {p2['floor']['median']:.2f} s (median) to "
            f"queue {p2['n']} bare jobs in one transaction; ours adds "
            f"{p2['ours']['median'] - p2['floor']['median']:.2f} s (the target stored at the "
            "scheduler through the proxy, the call to the client's HTCondor helper process)"
        )
    p6 = results["p6"]
    grew = p6["client_rss_after_mb"] - p6["client_rss_before_mb"]
    check(
        p6["all_queued_s"] <= 1, f"P6 scale({p6['n']}) queued in {p6['all_queued_s']:.2f} s <= 1 s"
    )
    check(p6["scale0_empty_s"] <= 3, f"P6 scale(0) emptied in {p6['scale0_empty_s']:.2f} s <= 3 s")
    check(grew <= 50, f"P6 client memory grew {grew:.0f} MB <= 50 MB")
    return "\n".join(lines)


def plot(timelines: dict[str, list[tuple[float, int]]], n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "floor": "floor: bare sleep jobs running",
        "bare workers": "bare workers: stock dask worker jobs connected",
        "ours": "htcdaskgateway: workers connected",
        "jobqueue": "dask-jobqueue: workers connected",
    }
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, timeline in timelines.items():
        xs, ys = zip(*timeline, strict=True)
        ax.step(xs, ys, where="post", label=labels[name])
    ax.set_xlabel("seconds since scale / submit")
    ax.set_ylabel("count")
    ax.set_title(f"N = {n}, first repeat")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
