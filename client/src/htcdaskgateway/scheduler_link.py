"""The client's calls to its cluster's scheduler, each with a time limit.

The handlers are those of ``scheduler_plugin`` plus distributed's own
``identity`` and ``retire_workers``. A call that does not finish within its
limit raises ``TimeoutError``, so a scheduler that stopped answering cannot
hold up the lease or the watcher for good.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .jobs import JobId
from .naming import is_htcondor_worker, job_id_of_worker, worker_name
from .targets import DEFAULT_GROUP

# Seconds for a quick call (lease, target, names); retiring workers moves
# their data first, which takes as long as the data takes.
CALL_TIMEOUT = 10.0
RETIRE_TIMEOUT = 300.0


class SchedulerLink:
    """One cluster's scheduler, as ``scheduler_comm`` reaches it."""

    def __init__(self, comm: Any, timeout: float = CALL_TIMEOUT) -> None:
        self.comm = comm
        self.timeout = timeout

    async def _ask(self, handler: str, timeout: float | None = None, **kwargs: Any) -> Any:
        call = getattr(self.comm, handler)(**kwargs)
        return await asyncio.wait_for(call, timeout or self.timeout)

    async def renew(
        self, token: str, ttl: float | None, apply_ttl: float | None = None
    ) -> dict[str, Any]:
        """Renew, release (``ttl`` 0) or read a client lease; offer to apply the target."""
        reply = await self._ask("htcdaskgateway_renew", token=token, ttl=ttl, apply_ttl=apply_ttl)
        return reply or {}

    async def set_target(
        self,
        token: str,
        target: dict[str, Any] | None,
        apply_ttl: float,
        group: str = DEFAULT_GROUP,
        spec: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Set ``group``'s target (a named group is added with ``spec``, its settings)."""
        return await self._ask(
            "htcdaskgateway_set_target", token=token, target=target, apply_ttl=apply_ttl,
            **_group_arguments(group, spec),
        )  # fmt: skip

    async def delete_group(self, token: str, group: str, apply_ttl: float) -> dict[str, Any]:
        return await self._ask(
            "htcdaskgateway_delete_group", token=token, group=group, apply_ttl=apply_ttl
        )

    async def confirm(
        self, token: str, generation: int | None, group: str = DEFAULT_GROUP
    ) -> dict[str, Any]:
        """The plugin's state; ``confirmed``: ``token`` applies ``group``'s ``generation`` now."""
        reply = await self._ask(
            "htcdaskgateway_confirm", token=token, generation=generation,
            **_group_arguments(group),
        )  # fmt: skip
        # A scheduler image of htcdaskgateway 2026.12.0 has no such handler
        # and answers None: it cannot confirm, so the client acts on what
        # its last renewal said, as that release did (the version check
        # warns of the mismatch).
        return {"confirmed": True} if reply is None else dict(reply)

    async def release(self, token: str) -> None:
        await self._ask("htcdaskgateway_release", token=token)

    async def joined_jobs(self) -> set[JobId]:
        """The jobs whose workers are in the scheduler now."""
        # Asked of the scheduler itself: the worker-status subscription that
        # fills scheduler_info is not a reliable count once clients attach.
        identity = await self._ask("identity", n_workers=-1)
        names = (info.get("name") for info in identity.get("workers", {}).values())
        return {JobId(job_id) for job_id in map(job_id_of_worker, names) if job_id}

    async def pod_workers(self) -> set[str]:
        """The names of the workers in the scheduler that are not HTCondor jobs (pods)."""
        identity = await self._ask("identity", n_workers=-1)
        names = (info.get("name") for info in identity.get("workers", {}).values())
        return {str(name) for name in names if name is not None and not is_htcondor_worker(name)}

    async def jobs_to_close(self, n: int, among: list[JobId] | None = None) -> list[JobId]:
        """The ``n`` jobs (of ``among``, if given) whose workers' loss costs least, best first."""
        kwargs = {} if among is None else {"names": [worker_name(job_id) for job_id in among]}
        names = await self._ask("htcdaskgateway_workers_to_close", n=n, **kwargs)
        return [JobId(job_id) for job_id in map(job_id_of_worker, names) if job_id]

    async def versions(self) -> dict[str, Any]:
        """``{"scheduler": packages, "workers": {name: packages}}`` (``versions.py``)."""
        return dict(await self._ask("htcdaskgateway_versions"))

    async def adaptive_target(
        self, target_duration: float, resources: dict[str, float] | None = None
    ) -> int:
        """Workers wanted; with ``resources``, those the tasks that need them fill."""
        kwargs = {"resources": resources} if resources else {}
        return int(
            await self._ask(
                "htcdaskgateway_adaptive_target", target_duration=target_duration, **kwargs
            )
        )

    async def retire(self, job_ids: list[JobId]) -> None:
        """Retire the jobs' workers: their data moves to other workers first."""
        names = [worker_name(job_id) for job_id in job_ids]
        await self._ask(
            "retire_workers", RETIRE_TIMEOUT, names=names, close_workers=True, remove=True
        )


def _group_arguments(group: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    # Only for named groups: a scheduler of 2026.12.0 knows no group and
    # refuses the keyword, and its one target is the default group's.
    if group == DEFAULT_GROUP:
        return {}
    return {"group": group} if spec is None else {"group": group, "spec": spec}
