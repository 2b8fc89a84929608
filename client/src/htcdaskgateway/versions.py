"""Whether this client, its scheduler and its workers can exchange pickles.

Tasks and results cross between the three as pickles (cloudpickle), which
break when Python's minor version or the dask, distributed or cloudpickle
versions differ. Distributed compares versions only when a client or worker
connects, in a table of every package; workers that join later, and the way
out, go unmentioned. ``VersionCheck`` looks again whenever new workers have
joined and says once, naming both sides and the image to use.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

from ._version import __version__

logger = logging.getLogger(__name__)

# Package versions that must agree for pickles to cross (Python: minor version).
PICKLE_RELEVANT = ("python", "dask", "distributed", "cloudpickle")
WORKERS_NAMED = 3


class VersionMismatchWarning(UserWarning):
    """The client's Python or dask packages differ from its scheduler's or workers'."""


def _comparable(package: str, version: str | None) -> str | None:
    if package == "python" and version:
        return ".".join(version.split(".")[:2])
    return version


def differences(
    mine: Mapping[str, str | None], theirs: Mapping[str, str | None]
) -> dict[str, tuple[str | None, str | None]]:
    """The pickle-relevant packages whose versions differ: name -> (mine, theirs)."""
    return {
        package: (mine.get(package), theirs.get(package))
        for package in PICKLE_RELEVANT
        if _comparable(package, mine.get(package)) != _comparable(package, theirs.get(package))
    }


def _describe(packages: Mapping[str, str | None]) -> str:
    parts = []
    for package in PICKLE_RELEVANT:
        version = packages.get(package)
        if package == "python" and version:
            version = ".".join(version.split(".")[:3])
        parts.append(f"{'Python' if package == 'python' else package} {version or 'missing'}")
    return ", ".join(parts)


def mismatch_message(
    mine: Mapping[str, str | None],
    scheduler: Mapping[str, str | None] | None,
    workers: Mapping[str, Mapping[str, str | None]],
) -> str | None:
    """One message naming every side whose versions differ from ``mine``, and the fix."""
    sides = []
    if scheduler is not None and differences(mine, scheduler):
        sides.append(f"its scheduler runs {_describe(scheduler)}")
    by_versions: dict[str, list[str]] = {}
    for name, packages in sorted(workers.items()):
        if differences(mine, packages):
            by_versions.setdefault(_describe(packages), []).append(name)
    for described, names in by_versions.items():
        shown = ", ".join(names[:WORKERS_NAMED])
        if len(names) > WORKERS_NAMED:
            shown += f" and {len(names) - WORKERS_NAMED} more"
        sides.append(f"worker(s) {shown} run {described}")
    if not sides:
        return None
    return (
        f"This client runs {_describe(mine)}, but {'; '.join(sides)}. Tasks and results "
        "pickled on one side may fail to load on the other. Use the images built with "
        f"htcdaskgateway {__version__} (htcdaskgateway/scheduler:{__version__} for the "
        f"gateway, htcdaskgateway/worker:{__version__} for the workers, set by "
        "gateway.htcondor.worker.image or the execute nodes' environment), or install the "
        "same Python minor version and dask, distributed and cloudpickle versions here."
    )


def local_versions() -> dict[str, str | None]:
    from distributed.versions import get_versions

    return dict(get_versions()["packages"])


class VersionCheck:
    """Compares the cluster's scheduler and workers with this client, warning once."""

    def __init__(self, ask: Any, mine: Mapping[str, str | None] | None = None) -> None:
        self._ask = ask  # async () -> {"scheduler": packages, "workers": {name: packages}}
        self._mine = dict(mine) if mine is not None else None
        self._workers_seen = -1
        self.message: str | None = None

    async def check(self, workers_joined: int) -> str | None:
        """Look again if the number of joined workers changed; warn once on a mismatch."""
        if self.message is not None or workers_joined == self._workers_seen:
            return self.message
        self._workers_seen = workers_joined
        reply = await self._ask()
        if self._mine is None:
            self._mine = local_versions()
        message = mismatch_message(self._mine, reply.get("scheduler"), reply.get("workers") or {})
        if message is not None:
            self.message = message
            logger.warning(message)
            warnings.warn(message, VersionMismatchWarning, stacklevel=2)
        return message
