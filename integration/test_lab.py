"""The analyst's JupyterLab in a real browser (issue 29).

JupyterLab (with ipywidgets and dask-labextension, as `make lab` serves it)
runs here as alice against the stack; headless Chromium, Debian's, driven
through Playwright, does what an analyst does: runs the usage notebook cell
by cell, scales with the cluster widget's Scale button, waits with the
progress bar, computes, opens dask dashboard panes from the lab's Dask
side panel (through the gateway's proxy) and shuts the cluster down.
Screenshots go to build/e2e-artifacts/ (the client README shows them).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from conftest import TARGET, nothing_queued, wait_for
from htcdaskgateway import HTCGateway

pytestmark = pytest.mark.skipif(TARGET == "k8s", reason="the compose stack's lab")

ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", "/src/build/e2e-artifacts"))
EXAMPLES = Path(__file__).resolve().parents[1] / "client" / "examples"
CHROMIUM = "/usr/bin/chromium"
WORKERS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _notebook(path: Path) -> None:
    """The usage notebook, its scale() cell left to the widget's Scale button."""
    nb = json.loads((EXAMPLES / "usage.ipynb").read_text())
    cells = []
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "cluster.scale(" in source:
            continue
        source = source.replace("wait_for_workers(5)", f"wait_for_workers({WORKERS})")
        cells.append({**cell, "source": source, "outputs": [], "execution_count": None}
                     if cell["cell_type"] == "code" else {**cell, "source": source})  # fmt: skip
    path.write_text(json.dumps({**nb, "cells": cells}))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    """A JupyterLab server as `make lab` starts it; its URL with a fresh token."""
    work = tmp_path / "work"
    work.mkdir()
    _notebook(work / "usage.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    server = subprocess.Popen(
        ["jupyter", "lab", "--ip=127.0.0.1", f"--port={port}", "--no-browser",
         f"--ServerApp.root_dir={work}", f"--IdentityProvider.token={token}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "lab.log").open("w"),
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_for(up, "JupyterLab to answer", 90, interval=0.5)
        yield f"{base}/lab/tree/usage.ipynb?token={token}"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        print((tmp_path / "lab.log").read_text()[-3000:])


def _run_cell(page, index: int, timeout: float = 300) -> None:
    """Select code cell ``index`` and run it with Shift+Enter, as an analyst
    does; return when its prompt shows a new execution count. A key press
    that JupyterLab drops while its kernel connection settles (the prompt
    never turns to [*]) is repeated."""
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
    prompt = cell.locator(".jp-InputPrompt")
    before = prompt.inner_text()
    changed = "([el, before]) => el.textContent !== before"
    for attempt in range(3):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(changed, arg=[prompt.element_handle(), before], timeout=15_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    page.wait_for_function(
        "([el, before]) => /\\[\\d+\\]/.test(el.textContent) && el.textContent !== before",
        arg=[prompt.element_handle(), before], timeout=timeout * 1000,
    )  # fmt: skip


DASHBOARD_FRAME = ".dask-DaskDashboard-widget iframe"
# The number of tasks the Task Stream pane's Bokeh document holds (its
# column data source has a "duration" per task bar).
TASK_STREAM_BARS = """() => {
  if (!window.Bokeh) return 0;
  let bars = 0;
  for (const doc of Bokeh.documents) {
    const models = doc._all_models ? [...doc._all_models.values()] : [...doc.all_models];
    for (const m of models) if (m.data && m.data.duration) bars += m.data.duration.length;
  }
  return bars;
}"""


def _show_tab(page, title: str) -> None:
    label = page.locator(".lm-TabBar-tabLabel").filter(has_text=re.compile(f"^{re.escape(title)}$"))
    label.first.click()


def test_the_usage_notebook_in_jupyterlab_with_widget_progress_and_dashboards(lab):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with HTCGateway() as gateway:
        before = {report.name for report in gateway.list_clusters()}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  # Loopback only: every other host name resolves to nothing.
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        name = None
        try:
            name = _drive(page, lab)
        except BaseException:
            page.screenshot(path=ARTIFACTS / "lab-failure.png", full_page=True)
            raise
        finally:
            browser.close()
            if name is None:  # the notebook's cluster, if it got that far; no other
                with HTCGateway() as gateway:
                    for report in gateway.list_clusters():
                        if report.name not in before:
                            gateway.connect(report.name).shutdown()
    wait_for(lambda: nothing_queued(name), f"the jobs of {name} to leave", 60)


def _drive(page, url: str) -> str:
    """The analyst's session; returns the cluster's name."""
    started = time.monotonic()
    page.goto(url)
    page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=120_000)
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=120_000)

    # The cluster: dask-gateway's live widget, with its HTCondor job table.
    _run_cell(page, 0)
    widget = page.locator(".jp-OutputArea-output").filter(has_text="Manual Scaling").first
    widget.wait_for(timeout=60_000)
    name = re.search(r"Name: (\S+)", widget.inner_text()).group(1)
    widget.get_by_text("Manual Scaling").click()
    workers = widget.locator("input[type='number']").first
    workers.fill(str(WORKERS))
    widget.get_by_role("button", name="Scale", exact=True).click()
    widget.get_by_text(f"running {WORKERS}").wait_for(timeout=180_000)
    widget.screenshot(path=ARTIFACTS / "lab-widget.png")

    # The client, then the wait: a progress bar that ends at 3/3.
    _run_cell(page, 1)
    _run_cell(page, 2)
    progress = page.locator(f"progress[value='{WORKERS}'][max='{WORKERS}']")
    progress.wait_for(timeout=60_000)
    progress.locator("xpath=ancestor::div[contains(@class,'jp-OutputArea-output')]").screenshot(
        path=ARTIFACTS / "lab-progress.png"
    )
    _run_cell(page, 3)
    result = page.locator(".jp-Notebook .jp-CodeCell").nth(3).locator(".jp-OutputArea-output")
    assert "True" in result.inner_text()

    frames = page.locator(DASHBOARD_FRAME)
    # The Dask side panel finds the notebook's dashboard (through the
    # gateway's proxy) and opens its panes in the lab.
    page.locator("li[data-id='dask-dashboard-launcher']").click()
    page.get_by_title("Auto-detect dashboard URL").click()
    url_input = page.locator(".dask-URLInput input")
    page.wait_for_function(
        "el => el.value.includes('/clusters/')", arg=url_input.element_handle(), timeout=60_000
    )
    dashboard = url_input.input_value()
    for pane in ("Workers", "Task Stream"):
        button = page.locator(".dask-DashboardListing-item button").filter(
            has_text=re.compile(f"^{pane}$")
        )
        wait_for(button.is_enabled, f"the {pane} pane to be offered for {dashboard}", 60)
        button.click()
    frames.nth(1).wait_for(timeout=60_000)
    srcs = [frames.nth(i).get_attribute("src") or "" for i in range(frames.count())]
    assert all(src.startswith(dashboard.split("/status")[0]) for src in srcs), (dashboard, srcs)

    _show_tab(page, "Workers")
    workers_pane = page.frame_locator(f"{DASHBOARD_FRAME}[src$='individual-workers']")
    workers_pane.get_by_text("htc-").first.wait_for(timeout=60_000)
    page.screenshot(path=ARTIFACTS / "lab-dashboard.png")

    # Work while the task stream is on screen: its bars are what it drew.
    _show_tab(page, "usage.ipynb")
    _run_cell(page, 3)
    _show_tab(page, "Task Stream")
    stream = page.locator(f"{DASHBOARD_FRAME}[src$='individual-task-stream']")
    frame = stream.element_handle().content_frame()
    frame.wait_for_function(TASK_STREAM_BARS, timeout=60_000)
    page.screenshot(path=ARTIFACTS / "lab-task-stream.png")
    _show_tab(page, "usage.ipynb")

    # The cluster again (its job table after the work), then shut down, as
    # the notebook's last cell does.
    _run_cell(page, 4)
    _run_cell(page, 5)
    stderr = page.locator("[data-mime-type='application/vnd.jupyter.stderr']")
    assert stderr.count() == 0, stderr.all_inner_texts()
    with HTCGateway() as gateway:
        assert name not in {c.name for c in gateway.list_clusters()}
    print(f"lab session: {time.monotonic() - started:.1f} s")
    return name
