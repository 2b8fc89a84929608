"""What an analyst meets first: the usage run verbatim as a script, and as a
notebook in a real kernel, rendered and pictured as the client README shows it.

The rendered notebook and its picture are written to ``E2E_ARTIFACTS``
(``build/e2e-artifacts`` on the host, scripts/pytest-in-analyst); the
README's picture, ``client/examples/usage.png``, is copied from there.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import nothing_queued, wait_for
from htcdaskgateway import HTCGateway

EXAMPLES = Path(__file__).resolve().parents[1] / "client" / "examples"
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", "/tmp/e2e-artifacts"))

# The README's usage (no gateway.close(), as the old package's README
# shows it), with a computation; with and without the closing shutdown().
USAGE = """
import dask.array as da
from htcdaskgateway import HTCGateway

gateway = HTCGateway()
cluster = gateway.new_cluster()
cluster
cluster.scale(2)
client = cluster.get_client()
client
print("clusters", len(gateway.list_clusters()))  # the gateway's own HTTP session
x = da.arange(1000, chunks=100)
print("cluster", cluster.name)
print("result", int((x**2).sum().compute()), flush=True)
"""
SUM_OF_SQUARES_BELOW_1000 = 332833500
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SIGNS_OF_A_DIRTY_EXIT = ("Unclosed", "Exception ignored", "Traceback", "Task was destroyed")


def _cluster_jobs(name: str) -> int:
    with HTCGateway() as gateway:
        return len(gateway.worker_jobs().get(name, []))


@pytest.mark.parametrize("ending", ["cluster.shutdown()", ""], ids=["shutdown", "exit"])
def test_the_usage_as_a_script_exits_cleanly_and_leaves_nothing(ending):
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", USAGE + ending],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/tmp",
    )
    print(f"usage script ({ending or 'interpreter exit'}) ran {time.monotonic() - started:.1f} s")
    assert run.returncode == 0, run.stderr
    assert f"result {SUM_OF_SQUARES_BELOW_1000}" in run.stdout
    for sign in SIGNS_OF_A_DIRTY_EXIT:
        assert sign not in run.stderr, f"{sign!r} on stderr:\n{run.stderr}"
    assert "VersionMismatchWarning" not in run.stderr
    name = run.stdout.split("cluster ", 1)[1].split()[0]
    with HTCGateway() as gateway:
        assert name not in {c.name for c in gateway.list_clusters()}, "cluster left running"
    assert _cluster_jobs(name) == 0, "jobs left in the queue"


def _render(nb: object) -> Path:
    """The executed notebook as HTML, the way a static viewer shows it."""
    from nbconvert import HTMLExporter

    # The templates load require.js and MathJax from CDNs; nothing here may
    # reach beyond loopback, so no script is referenced at all.
    exporter = HTMLExporter(template_name="lab", require_js_url="", mathjax_url="")
    # Without a live kernel's widget manager a viewer shows a widget's HTML
    # fallback (the cluster's carries the job table), not its view.
    static = copy.deepcopy(nb)
    for cell in static.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
    static.metadata.pop("widgets", None)
    html, _ = exporter.from_notebook_node(static)
    path = ARTIFACTS / "usage.html"
    path.write_text(html)
    return path


def _picture(html: Path) -> Path:
    png = ARTIFACTS / "usage.png"
    png.unlink(missing_ok=True)
    chromium = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--hide-scrollbars", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        # Every host name resolves to nothing: only the file is read.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1100,1400", f"--screenshot={png}", html.as_uri(),
    ]  # fmt: skip
    subprocess.run(chromium, check=True, capture_output=True, timeout=120, cwd="/tmp")
    return png


def test_the_usage_notebook_runs_in_a_real_kernel_and_is_pictured(tmp_path):
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(EXAMPLES / "usage.ipynb", as_version=4)
    started = time.monotonic()
    # IPC: the kernel's channels are files, not ports on loopback.
    kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "kernel"))
    NotebookClient(nb, km=kernel, timeout=300, resources={"metadata": {"path": "/tmp"}}).execute()
    print(f"notebook executed in {time.monotonic() - started:.1f} s")
    outputs = {cell.id: cell.outputs for cell in nb.cells if cell.cell_type == "code"}

    def shown(cell_id: str, mime: str) -> str:
        return "".join(
            str(o.get("data", {}).get(mime, "")) + str(o.get("text", "")) for o in outputs[cell_id]
        )

    errors = [o for outs in outputs.values() for o in outs if o.output_type == "error"]
    assert not errors, errors
    assert "HTCondor jobs:" in shown("cell-1", "text/html"), "no job table for the new cluster"
    # The wait's progress is a bar in its cell, updated in place to its end;
    # nothing at all went to stderr (a notebook shows it as an error).
    progress = shown("cell-wait", "text/html")
    assert "waiting for 5 workers" in progress and "5/5 workers" in progress, progress
    assert "<progress value='5' max='5'>" in progress, progress
    stderr = [o for outs in outputs.values() for o in outs
              if o.output_type == "stream" and o.name == "stderr"]  # fmt: skip
    assert not stderr, stderr
    # Fresh jobs are idle (their input is not spooled), never shown as held.
    assert re.search(r"held [1-9]", progress) is None, progress
    assert "True" in shown("cell-4", "text/plain"), shown("cell-4", "text/plain")
    after = shown("cell-5", "text/html")
    assert "HTCondor jobs:</b> idle 0, running 5, held 0" in after, after
    for sign in SIGNS_OF_A_DIRTY_EXIT:
        assert all(sign not in shown(c, "text/plain") for c in outputs), sign

    png = _picture(_render(nb))
    with Image.open(png) as picture:
        colours = picture.convert("RGB").getcolors(maxcolors=1 << 16)
        size = picture.size
    assert colours is None or len(colours) > 20, "the picture is blank"
    print(f"notebook picture {png} {size[0]}x{size[1]}, {png.stat().st_size} bytes")


# The seed's usage with a second object on the same cluster (connect()),
# and the cluster shut down by the first (issue 26, point 15). The endings:
# the connected object left to interpreter exit (as reported); left open
# while the script goes on; closed a little after the shutdown; and the
# mirror, the connected object shutting the cluster down while the first,
# and its dask client, stay open.
USAGE_WITH_CONNECT = """
import time
from htcdaskgateway import HTCGateway

gateway = HTCGateway()
cluster = gateway.new_cluster()
cluster.scale(2)
client = cluster.get_client()
print("cluster", cluster.name, flush=True)
print("result", client.submit(sum, range(10)).result(), flush=True)
again = gateway.connect(cluster.name)
print(again, flush=True)
"""
ENDINGS = {
    "again-left-open": "cluster.shutdown()",
    "again-open-while-the-script-goes-on": "cluster.shutdown()\ntime.sleep(30)",
    "again-closed-after": "cluster.shutdown()\ntime.sleep(5)\nagain.close()",
    "again-shuts-down": "again.shutdown()\ntime.sleep(5)",
}


@pytest.mark.parametrize("ending", list(ENDINGS), ids=list(ENDINGS))
def test_the_usage_with_connect_prints_nothing_on_stderr(ending):
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", USAGE_WITH_CONNECT + ENDINGS[ending]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/tmp",
    )
    took = time.monotonic() - started
    print(f"usage with connect() ({ending}) ran {took:.1f} s")
    assert run.returncode == 0, run.stderr
    assert "result 45" in run.stdout, run.stdout + run.stderr
    name = run.stdout.split("cluster ", 1)[1].split()[0]
    # Nothing left, whatever stderr says (checked first so that a failure
    # on stderr does not hide one here).
    with HTCGateway() as gateway:
        assert name not in {c.name for c in gateway.list_clusters()}, "cluster left running"
    wait_for(lambda: nothing_queued(name), f"the jobs of {name} to leave the queue", 30)
    # Nothing at all on stderr: no warning, no log line, no traceback.
    assert run.stderr == "", f"stderr of the usage ({ending}), after {took:.1f} s:\n{run.stderr}"
