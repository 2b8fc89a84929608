"""How a cluster's jobs are shown: repr, job table, widget HTML, progress line.

Pure functions of what the tracker and reconciler know; nothing here asks
HTCondor or the scheduler anything.
"""

from __future__ import annotations

import html
import sys
from typing import Any

from .jobs import EndedJob, JobStatus, JobTracker, count_by_status
from .reconciler import Reconciler


def job_rows(tracker: JobTracker) -> list[dict[str, str]]:
    """The jobs as last seen: id, state and why it is idle or held."""
    unreachable = getattr(tracker.schedd, "unreachable", {})
    rows = []
    for job in tracker.table:
        status = job.status.name.lower()
        if job.job_id.schedd in unreachable:
            status += " (schedd not answering)"
        rows.append({"job": str(job.job_id), "group": job.group, "status": status,
                     "reason": tracker.reason(job)})  # fmt: skip
    return rows


def _counts(tracker: JobTracker, why: str = "") -> str:
    counts = count_by_status(tracker.table)
    return f"idle {counts['idle']}{why}, running {counts['running']}, held {counts['held']}"


def jobs_summary(tracker: JobTracker, reconciler: Reconciler | None = None) -> str:
    """One line: counts, why idle jobs wait, and whether submitting is held back."""
    idle = [job for job in tracker.table if job.status is JobStatus.IDLE]
    reasons = sorted({tracker.reason(job) for job in idle} - {""})
    why = f" ({'; '.join(reasons)})" if reasons else ""
    text = f"jobs {_counts(tracker, why)}"
    unreachable = sorted(getattr(tracker.schedd, "unreachable", {}))
    if unreachable:
        text += f"; schedd {', '.join(unreachable)} not answering (its jobs as last seen)"
    if reconciler is not None and reconciler.submit_error:
        text += (
            f"; submitting failed {reconciler.submit_failures} time(s) "
            f"({reconciler.submit_error}), next try in {reconciler.retry_in:.0f} s"
        )
    return text


def failure_message(
    job: EndedJob, joined: bool, scheduler_address: str, death_timeout: float
) -> str:
    """How a job ended without serving, and what to check."""
    if job.removed_by_policy:
        why = (
            "the schedd removed it because the cluster's client lease had lapsed: the "
            "client holding it stopped renewing (gateway.htcondor.lease)"
        )
    elif joined:
        why = "its worker had joined and then crashed"
    elif job.run_seconds is not None and job.run_seconds >= 0.8 * death_timeout:
        why = (
            f"its worker could not reach the scheduler at {scheduler_address} "
            f"within the death timeout ({death_timeout:g} s): check "
            "gateway.htcondor.scheduler-address and that execute nodes can reach the "
            "gateway's proxy"
        )
    else:
        why = (
            "its worker stopped before joining: check that the worker environment "
            "(gateway.htcondor.worker.executable, image) can run htcdaskgateway-worker "
            "with this cluster's dask version"
        )
    return f"{job.describe()}; {why}"


def short_repr(name: object, status: object, tracker: JobTracker) -> str:
    return f"HTCGatewayCluster<{name}, status={status}, jobs: {_counts(tracker)}>"


def jobs_html(tracker: JobTracker, reconciler: Reconciler, failure: str | None) -> str:
    """The job table for the widget and the notebook repr (running jobs are only counted)."""
    rows = "".join(
        f"<tr><td>{row['job']}</td><td>{row['status']}</td>"
        f"<td>{html.escape(row['reason'])}</td></tr>"
        for row in job_rows(tracker)
        if row["status"] != "running"
    )
    table = f"<table><tr><th>job</th><th>state</th><th>reason</th></tr>{rows}</table>"
    notes = ""
    if failure:
        notes += (
            f"<p><b>{tracker.failures_in_a_row} job(s) in a row ended without serving:</b> "
            f"{html.escape(failure)}</p>"
        )
    if reconciler.submit_error:
        notes += (
            f"<p><b>Submitting failed {reconciler.submit_failures} time(s):</b> "
            f"{html.escape(reconciler.submit_error)}; next try in {reconciler.retry_in:.0f} s</p>"
        )
    return f"<p><b>HTCondor jobs:</b> {_counts(tracker)}</p>" + (table if rows else "") + notes


class Progress:
    """One status line, rewritten in place on a terminal, on stderr."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.last = ""
        self.interactive = sys.stderr.isatty()

    def show(self, joined: int, n: int, state: str) -> None:
        text = progress_text(joined, n, state)
        if text == self.last:
            return
        self.last = text
        if self.interactive:
            sys.stderr.write(f"\r{self.prefix}: {text}\x1b[K")
        else:
            sys.stderr.write(f"{self.prefix}: {text}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.interactive and self.last:
            sys.stderr.write("\n")


def waiting_title(name: object, n: int) -> str:
    return f"{name}: waiting for {n} workers"


def progress_text(joined: int, n: int, state: str) -> str:
    return f"{joined}/{n} workers; {state}"


def progress_html(prefix: str, joined: int, n: int, state: str) -> str:
    return (
        f"<div class='htcdaskgateway-progress'><b>{html.escape(prefix)}</b> "
        f"<progress value='{min(joined, n)}' max='{max(n, 1)}'></progress> "
        f"<span>{html.escape(progress_text(joined, n, state))}</span></div>"
    )


class NotebookProgress:
    """A progress bar in the cell's output, updated in place (a display id).

    Plain HTML rather than a widget: it needs no widget manager, so the
    saved or rendered notebook keeps the last state, and nothing goes to
    stderr, which a notebook shows as an error.
    """

    def __init__(self, prefix: str) -> None:
        from IPython.display import HTML, display

        self.prefix = prefix
        self.last = ""
        self._html = HTML
        self.handle = display(HTML(progress_html(prefix, 0, 0, "starting")), display_id=True)

    def show(self, joined: int, n: int, state: str) -> None:
        text = progress_html(self.prefix, joined, n, state)
        if text != self.last and self.handle is not None:
            self.last = text
            self.handle.update(self._html(text))

    def done(self) -> None:
        pass


def in_a_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (whose stderr the notebook shows in red)."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress_for(prefix: str) -> Progress | NotebookProgress:
    """The bar in a notebook, the line elsewhere. Made in the caller's thread."""
    return NotebookProgress(prefix) if in_a_notebook() else Progress(prefix)


class ShownWithJobs:
    """repr, HTML and widget of a cluster object, with its job table (a ``GatewayCluster`` mixin).

    Reads the running cluster's parts (``_runtime``); asks nothing itself.
    """

    name: str | None
    status: str
    _runtime: Any
    _widget: Any

    def __repr__(self) -> str:
        if self._runtime is None:
            return f"HTCGatewayCluster<{self.name}, status={self.status}>"
        return short_repr(self.name, self.status, self._runtime.tracker)

    def _jobs_html(self) -> str:
        runtime = self._runtime
        if runtime is None:
            return ""
        parts = [jobs_html(runtime.tracker, runtime.reconciler, runtime.failure_message())]
        for name, group in sorted(runtime.groups.items()):
            if group is runtime.reconciler or name in runtime.watcher.deleted_groups:
                continue
            tracker = getattr(group, "tracker", None)
            if tracker is None:  # the gateway's own workers (pods)
                parts.append(f"<p><b>Worker group {html.escape(name)} (pods):</b> "
                             f"{group.joined_count} joined</p>")  # fmt: skip
            else:
                parts.append(f"<p><b>Worker group {html.escape(name)}:</b></p>"
                             + jobs_html(tracker, group, None))  # fmt: skip
        return "".join(parts)

    def _widget_status(self) -> str:
        return (super()._widget_status() or "") + self._jobs_html()

    def _repr_html_(self) -> str:
        return super()._repr_html_() + self._jobs_html()

    def _ipython_display_(self, **kwargs: Any) -> None:
        # dask-gateway shows only the widget when ipywidgets is installed;
        # a notebook saved, rendered or viewed without the widget manager
        # (nbconvert, GitHub, a kernel restarted) then shows "VBox(...)".
        # The same bundle also carries the HTML, job table included.
        widget = self._widget()
        if widget is None:
            super()._ipython_display_(**kwargs)
            return
        from IPython.display import display

        bundle = dict(widget._repr_mimebundle_(**kwargs) or {})
        bundle.setdefault("text/html", self._repr_html_())
        display(bundle, raw=True)

    def _refresh_widget(self) -> None:
        widget = getattr(self, "_status_widget", None)
        if widget is not None:
            widget.value = self._widget_status()
