"""The schedds a cluster's jobs may go to, as one ``Schedd``.

Facilities run several schedds. ``gateway.htcondor.schedd`` names one or
several, or (null) lets the collector list them, narrowed by
``schedd-constraint``. New jobs go to one schedd per submission, picked at
random weighted by how much room its ad says it has (duty cycle, running
share, idle jobs); a schedd that does not answer or refuses jobs is passed
over for ``COOL_DOWN`` seconds and the next one is tried. Everything else
(the job table, lease renewals, removals, history) asks every schedd: a
cluster's jobs may be spread over all of them, and each job id names its
schedd (``JobId``).

A schedd that does not answer a query is shown with its jobs as last seen
(``unreachable`` says which): the reconciler then neither replaces jobs it
cannot see nor counts them twice when the schedd comes back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .errors import HTCondorError, ScheddUnavailableError, SubmitError
from .jobs import EndedJob, JobId, QueuedCredentials, WorkerJob
from .schedd import ScheddClient, ScheddMember

logger = logging.getLogger(__name__)

# Seconds a schedd that failed a submission is passed over for.
COOL_DOWN = 60.0
# Seconds the collector's list of schedds (and their load) is reused.
DISCOVERY_TTL = 60.0
# Least weight of a schedd that answers: a full one is still tried, last.
MIN_WEIGHT = 0.05
# Seconds a schedd missing from the collector's answers stays a member. A
# schedd or collector restart leaves it out for minutes while its jobs are
# still queued: it is asked as before (shown "not answering" if it does
# not) and removals and shutdown still reach it, but no new jobs go there.
UNLISTED_KEPT = 3600.0


def schedd_weight(ad: Mapping[str, Any]) -> float:
    """Room for more jobs in [MIN_WEIGHT, 1], from a schedd's ad; higher is freer.

    As lpcjobqueue and condor_submit front-ends at facilities weigh them:
    mostly the daemon's duty cycle (how busy its event loop is), then the
    share of its running-job limit in use, then its idle jobs.
    """
    duty = _number(ad.get("RecentDaemonCoreDutyCycle"), 0.0)
    running, limit = _number(ad.get("ShadowsRunning"), 0.0), _number(ad.get("MaxJobsRunning"), 0.0)
    running_share = running / limit if limit > 0 else 0.0
    idle_share = min(1.0, _number(ad.get("TotalIdleJobs"), 0.0) / 10_000)
    load = 0.7 * min(1.0, duty) + 0.2 * min(1.0, running_share) + 0.1 * idle_share
    return max(MIN_WEIGHT, 1.0 - load)


def _number(value: object, default: float) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


class ScheddPool:
    """Several schedds behind the ``ScheddMember`` interface, plus the choice of where to submit."""

    def __init__(
        self,
        collector: str | None,
        names: tuple[str, ...] | None,
        constraint: str | None,
        timeout: float,
        *,
        connect: Callable[[str | None], ScheddMember] | None = None,
        list_schedds: Callable[[str], Awaitable[list[dict[str, Any]]]] | None = None,
        rng: random.Random | None = None,
        clock: Any = time,
    ) -> None:
        self.collector = collector
        self.names = names
        self.constraint = constraint
        self.timeout = timeout
        # How a member is reached, and how the collector lists schedds; fakes in tests.
        self._connect = connect or (lambda name: ScheddClient(collector, name, timeout))
        self._list_schedds = list_schedds or ScheddClient(collector, None, timeout).schedd_ads
        self._rng = rng or random.Random()
        self._clock = clock
        self._members: dict[str | None, ScheddMember] = {}
        self._weights: dict[str | None, float] = {}
        self._discovered_at = -DISCOVERY_TTL
        self._unlisted_since: dict[str | None, float] = {}  # name -> monotonic
        self._cooling: dict[str | None, float] = {}  # name -> monotonic end of its cool-down
        self._last_seen: dict[tuple[str | None, str], list[WorkerJob]] = {}
        self.unreachable: dict[str, str] = {}  # schedd name -> why, as of the last query

    def __repr__(self) -> str:
        return f"ScheddPool(collector={self.collector!r}, names={self.names!r})"

    # -- membership -----------------------------------------------------------

    def _member(self, name: str | None) -> ScheddMember:
        if name not in self._members:
            self._members[name] = self._connect(name)
        return self._members[name]

    async def members(self) -> list[ScheddMember]:
        """Every schedd of the pool: as last listed by the collector, and those
        it stopped listing less than ``UNLISTED_KEPT`` seconds ago."""
        if self._clock.monotonic() - self._discovered_at < DISCOVERY_TTL and self._weights:
            return [self._member(name) for name in self._weights]
        constraint = self.constraint or "true"
        if self.names:
            named = " || ".join(f'Name == "{name}"' for name in self.names)
            constraint = f"({constraint}) && ({named})"
        try:
            ads = await self._list_schedds(constraint)
        except HTCondorError:
            if not self._weights and not self.names:
                raise
            ads = []  # keep the last list (or the configured names) while the collector is away
        if ads:
            now = self._clock.monotonic()
            listed = {ad["Name"]: schedd_weight(ad) for ad in ads if "Name" in ad}
            for name in listed:
                self._unlisted_since.pop(name, None)
            for name in self._weights.keys() - listed.keys():
                since = self._unlisted_since.setdefault(name, now)
                if now - since < UNLISTED_KEPT:
                    listed[name] = MIN_WEIGHT
                else:
                    del self._unlisted_since[name]
            self._weights = listed
            self._discovered_at = now
        elif self.names and not self._weights:
            self._weights = dict.fromkeys(self.names, 1.0)
        if not self._weights:
            where = f"at {self.collector}" if self.collector else "at the pool's collector"
            raise ScheddUnavailableError(
                f"No schedd {where} matches gateway.htcondor.schedd / schedd-constraint"
            )
        return [self._member(name) for name in self._weights]

    async def submit_order(self) -> list[ScheddMember]:
        """Schedds to try for a submission, best first: weighted by room, cooling ones last."""
        members = await self.members()
        now = self._clock.monotonic()
        # A schedd the collector no longer lists may be gone for good.
        members = [m for m in members if m.name not in self._unlisted_since] or members
        ready = [m for m in members if self._cooling.get(m.name, 0.0) <= now]
        cooling = [m for m in members if m not in ready]
        order = []
        while ready:
            weights = [self._weights.get(m.name, MIN_WEIGHT) for m in ready]
            pick = self._rng.choices(range(len(ready)), weights)[0]
            order.append(ready.pop(pick))
        return order + sorted(cooling, key=lambda m: self._cooling.get(m.name, 0.0))

    def cool_down(self, member: ScheddMember, reason: str) -> None:
        """Pass ``member`` over for new jobs for a while: it did not answer or refused them."""
        logger.warning("ScheddMember %s passed over for %.0f s: %s", member.name, COOL_DOWN, reason)
        self._cooling[member.name] = self._clock.monotonic() + COOL_DOWN

    # -- the ScheddMember interface, across all members --------------------------------

    async def owner(self) -> str:
        # One pool, one UID_DOMAIN: every schedd authenticates the client as
        # the same User; the first that answers says which.
        errors = []
        for member in await self.members():
            try:
                return await member.owner()
            except HTCondorError as exc:
                errors.append(str(exc))
        raise ScheddUnavailableError("; ".join(errors) or "no schedd")

    async def submit(
        self, describe: Callable[[ScheddMember], Awaitable[Mapping[str, str]]], count: int
    ) -> list[JobId]:
        """Queue ``count`` jobs on the first schedd of ``submit_order`` that takes them.

        ``describe(schedd)`` gives the jobs' description for that schedd. A
        schedd that does not answer or refuses them is cooled down and the
        next is tried; the last error is raised if none takes them.
        """
        failure: HTCondorError = ScheddUnavailableError("No schedd to submit to")
        for member in await self.submit_order():
            try:
                return await member.submit(await describe(member), count)
            except (ScheddUnavailableError, SubmitError) as exc:
                self.cool_down(member, str(exc))
                failure = exc
        raise failure

    async def _each(self, call: Any, members: list[ScheddMember] | None = None) -> list[Any]:
        """``call(member)`` on every member at once; results or exceptions, in member order."""
        members = members if members is not None else await self.members()
        return await asyncio.gather(*(call(m) for m in members), return_exceptions=True)

    @staticmethod
    def _raise_if_all_failed(results: list[Any], what: str) -> None:
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, HTCondorError):
                raise error
        if errors and len(errors) == len(results):
            raise ScheddUnavailableError(f"No schedd could {what}: {errors[0]}")

    async def jobs(self, constraint: str) -> list[WorkerJob]:
        members = await self.members()
        results = await self._each(lambda m: m.jobs(constraint), members)
        self._raise_if_all_failed(results, "be asked for the jobs")
        jobs: list[WorkerJob] = []
        for member, result in zip(members, results, strict=True):
            key = (member.name, constraint)
            if isinstance(result, BaseException):
                self.unreachable[str(member.name)] = str(result)
                jobs += self._last_seen.get(key, [])
            else:
                self.unreachable.pop(str(member.name), None)
                self._last_seen[key] = result
                jobs += result
        return sorted(jobs, key=lambda job: job.job_id.sort_key)

    async def credentials_jobs(self, constraint: str) -> list[QueuedCredentials]:
        results = await self._each(lambda m: m.credentials_jobs(constraint))
        self._raise_if_all_failed(results, "be asked for the credentials jobs")
        return [job for result in results if isinstance(result, list) for job in result]

    async def ended(self, job_ids: list[JobId], not_before: int) -> list[EndedJob]:
        by_schedd: dict[str | None, list[JobId]] = {}
        for job_id in job_ids:
            by_schedd.setdefault(job_id.schedd, []).append(job_id)
        members = [self._member(name) for name in by_schedd]
        results = await self._each(lambda m: m.ended(by_schedd[m.name], not_before), members)
        self._raise_if_all_failed(results, "say how the jobs ended")
        return [job for result in results if isinstance(result, list) for job in result]

    async def history(self, constraint: str, not_before: int, limit: int = -1) -> list[EndedJob]:
        results = await self._each(lambda m: m.history(constraint, not_before, limit))
        self._raise_if_all_failed(results, "read its history")
        ended = [job for result in results if isinstance(result, list) for job in result]
        return ended[:limit] if limit > 0 else ended

    async def edit(self, constraint: str, attribute: str, value: str) -> None:
        results = await self._each(lambda m: m.edit(constraint, attribute, value))
        self._raise_if_all_failed(results, f"set {attribute}")

    async def renew_lease(self, constraint: str, seconds: int) -> None:
        results = await self._each(lambda m: m.renew_lease(constraint, seconds))
        self._raise_if_all_failed(results, "renew the jobs' lease")

    async def explain_idle(self, job_id: JobId) -> str | None:
        return await self._member(job_id.schedd).explain_idle(job_id)

    async def remove(self, job_spec: list[JobId] | str, reason: str) -> int:
        """Remove jobs by id (each on its schedd) or by constraint (on every schedd).

        Every schedd that answers removes its share; if one did not, the
        others' removals stand and the error is raised after them.
        """
        if isinstance(job_spec, str):
            members = await self.members()
            results = await self._each(lambda m: m.remove(job_spec, reason), members)
        else:
            by_schedd: dict[str | None, list[JobId]] = {}
            for job_id in job_spec:
                by_schedd.setdefault(job_id.schedd, []).append(job_id)
            members = [self._member(name) for name in by_schedd]
            results = await self._each(lambda m: m.remove(by_schedd[m.name], reason), members)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, HTCondorError):
                raise error
        if errors:
            raise type(errors[0])(f"Not every schedd removed the jobs: {errors[0]}")
        return sum(results)
