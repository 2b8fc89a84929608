"""The only module that talks to HTCondor, through the htcondor2 bindings.

Each function takes where the schedd is (``where``: collector address and
schedd name, either ``None`` for the local HTCondor configuration's) and
returns plain data (numbers, strings, dicts), so that it can run in the
client's helper process (``helper_process``) and send its answer back.
Failures raise ``CondorCallError`` with a kind the client turns into its
own error classes. Only ``htcondor2`` is imported: the
helper process starts quickly.
"""

from __future__ import annotations

import contextlib
from typing import Any

import htcondor2

Where = tuple[str | None, str | None]

# Kinds of CondorCallError, mapped to the client's errors by schedd.py.
UNAVAILABLE = "unavailable"
SUBMIT = "submit"
FAILED = "failed"

# Slot attributes every explanation of an idle job reads, besides those the
# job's and the slots' requirements name.
_SLOT_PROJECTION = [
    "Name", "Requirements", "START", "WithinResourceLimits", "Cpus", "Memory", "Disk", "GPUs",
    "TotalSlotCpus", "TotalSlotMemory", "TotalSlotDisk", "TotalSlotGPUs", "DynamicSlot",
    "PartitionableSlot",
]  # fmt: skip

# The schedd's ad from the collector, per (collector, name): looked up on
# first use and again after any failure (a restarted schedd moves).
_locations: dict[Where, Any] = {}


class CondorCallError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


def call(name: str, where: Where, *args: Any) -> Any:
    """Run the call ``name``; a failure forgets the schedd's location."""
    try:
        return CALLS[name](where, *args)
    except CondorCallError:
        _locations.pop(where, None)
        raise
    except htcondor2.HTCondorException as exc:
        _locations.pop(where, None)
        raise CondorCallError(FAILED, f"HTCondor failed: {exc}") from None


def _collector(where: Where) -> htcondor2.Collector:
    return htcondor2.Collector(where[0]) if where[0] else htcondor2.Collector()


def _locate(where: Where) -> Any:
    location = _locations.get(where)
    if location is None:
        collector, name = where
        place = collector or "the collector of the local HTCondor configuration"
        try:
            ads = _collector(where).locateAll(htcondor2.DaemonType.Schedd)
        except htcondor2.HTCondorException as exc:
            raise CondorCallError(UNAVAILABLE, f"Cannot reach {place}: {exc}") from None
        if name is not None:
            ads = [ad for ad in ads if ad.get("Name") == name]
        if not ads:
            wanted = f"schedd {name!r}" if name else "schedd"
            raise CondorCallError(
                UNAVAILABLE,
                f"No {wanted} is registered at {place}: it is down or restarting, or "
                "gateway.htcondor.schedd / gateway.htcondor.collector name the wrong one",
            )
        if len(ads) > 1:
            known = sorted(str(ad.get("Name")) for ad in ads)
            raise CondorCallError(
                UNAVAILABLE,
                f"{place} knows several schedds ({', '.join(known)}); "
                "choose one with gateway.htcondor.schedd",
            )
        location = _locations[where] = ads[0]
    return location


# Schedd ad attributes that say how loaded a schedd is (schedd_pool.py).
SCHEDD_LOAD_ATTRIBUTES = [
    "Name", "RecentDaemonCoreDutyCycle", "ShadowsRunning", "MaxJobsRunning", "TotalIdleJobs",
]  # fmt: skip


def schedd_ads(where: Where, constraint: str) -> list[dict[str, Any]]:
    """The collector's ads of the schedds matching ``constraint``: name and load."""
    try:
        ads = _collector(where).query(
            htcondor2.AdType.Schedd, constraint, projection=SCHEDD_LOAD_ATTRIBUTES
        )
    except htcondor2.HTCondorException as exc:
        place = where[0] or "the collector of the local HTCondor configuration"
        raise CondorCallError(UNAVAILABLE, f"Cannot reach {place}: {exc}") from None
    return [_plain(ad, SCHEDD_LOAD_ATTRIBUTES) for ad in ads]


def _schedd(where: Where) -> htcondor2.Schedd:
    # htcondor2.Schedd holds only the address; each call opens a connection.
    return htcondor2.Schedd(_locate(where))


def identity(where: Where) -> str:
    """The user the schedd authenticates this process as (``name@domain``)."""
    try:
        reply = htcondor2.ping(_locate(where), "WRITE")
    except htcondor2.HTCondorException as exc:
        raise CondorCallError(UNAVAILABLE, f"Cannot reach the schedd: {exc}") from None
    user = reply.get("MyRemoteUserName")
    if not isinstance(user, str):
        raise CondorCallError(FAILED, "The schedd did not say which user this client acts as")
    return user


def submit(
    where: Where, description: dict[str, str], count: int, spool: bool
) -> tuple[int, int, int]:
    """Queue ``count`` jobs, spooling their input if ``spool``.

    Returns (ClusterId, first ProcId, count).
    """
    schedd = _schedd(where)
    try:
        result = schedd.submit(htcondor2.Submit(description), count=count, spool=spool)
    except htcondor2.HTCondorException as exc:
        raise CondorCallError(SUBMIT, f"The schedd refused the jobs: {exc}") from None
    cluster, first, procs = result.cluster(), result.first_proc(), result.num_procs()
    if not spool:
        # As condor_submit does (SUBMIT_SEND_RESCHEDULE): the schedd asks the
        # negotiator for a cycle now instead of at its next interval.
        with contextlib.suppress(htcondor2.HTCondorException):
            schedd.reschedule()
        return cluster, first, procs
    try:
        schedd.spool(result)
    except htcondor2.HTCondorException as exc:
        schedd.act(
            htcondor2.JobAction.Remove, f"ClusterId == {cluster}", _reason("input not spooled")
        )
        raise CondorCallError(
            SUBMIT, f"Could not send the cluster's credentials to the schedd: {exc}"
        ) from None
    return cluster, first, procs


def query(where: Where, constraint: str, projection: list[str]) -> list[dict[str, Any]]:
    try:
        ads = _schedd(where).query(constraint, projection=projection)
    except htcondor2.HTCondorException as exc:
        raise CondorCallError(FAILED, f"Could not query the schedd: {exc}") from None
    return [_plain(ad, projection) for ad in ads]


def history(
    where: Where, constraint: str, projection: list[str], limit: int, not_before: int
) -> list[dict[str, Any]]:
    try:
        ads = _schedd(where).history(
            constraint, projection=projection, match=limit,
            since=f"EnteredCurrentStatus < {int(not_before)}",
        )  # fmt: skip
        return [_plain(ad, projection) for ad in ads]
    except htcondor2.HTCondorException as exc:
        raise CondorCallError(FAILED, f"Could not read the schedd's job history: {exc}") from None


def edit(where: Where, constraint: str, attribute: str, value: str) -> None:
    schedd = _schedd(where)
    try:
        schedd.edit(constraint, attribute, value)
    except htcondor2.HTCondorException as exc:
        # The bindings refuse an edit that matches no job the same way as
        # one the schedd rejects; a lease renewal with no idle job left
        # (all running) has nothing to do and is no failure.
        with contextlib.suppress(htcondor2.HTCondorException):
            if not schedd.query(constraint, projection=["ClusterId"], limit=1):
                return
        raise CondorCallError(FAILED, f"Could not update worker jobs: {exc}") from None


def remove(where: Where, job_spec: list[str] | str, reason: str) -> int:
    try:
        result = _schedd(where).act(htcondor2.JobAction.Remove, job_spec, _reason(reason))
    except htcondor2.HTCondorException as exc:
        raise CondorCallError(FAILED, f"Could not remove worker jobs: {exc}") from None
    return int(result.get("TotalSuccess", 0))


def _reason(text: str) -> tuple[str, None]:
    # htcondor2 25.x's Schedd.act drops a reason given as a plain string (it
    # sends none, so the job's RemoveReason stays undefined); the
    # (reason, code) form is passed on. The reason is what an operator
    # reads in condor_history, so it must arrive.
    return (text, None)


def explain_idle(where: Where, cluster: int, proc: int) -> str | None:
    """Why an idle job has not started, from matching it against the pool's slots."""
    try:
        ads = _schedd(where).query(f"ClusterId == {cluster} && ProcId == {proc}")
        if not ads:
            return None
        job = ads[0]
        slots = _whole_slots(_slots(where, _referenced(job, "Requirements", other=True)))
    except htcondor2.HTCondorException as exc:
        raise CondorCallError(FAILED, f"Could not look at the pool: {exc}") from None
    matching = sum(1 for slot in slots if job.symmetricMatch(slot))
    if matching == 0:
        short = _too_large(job, slots)
        return (
            f"no slot can run it: none of the pool's {len(slots)} slots meets its "
            f"requirements ({short or job.get('Requirements')})"
        )
    return f"waiting for a free slot; {matching} of the pool's {len(slots)} slots could run it"


CALLS = {
    "identity": identity,
    "submit": submit,
    "query": query,
    "history": history,
    "edit": edit,
    "remove": remove,
    "explain_idle": explain_idle,
    "schedd_ads": schedd_ads,
}


def _plain(ad: Any, projection: list[str]) -> dict[str, Any]:
    """The projected attributes of an ad as Python values; unset ones are left out."""
    plain = {}
    for name in projection:
        value = ad.get(name)
        if isinstance(value, bool | int | float | str):
            plain[name] = value
    return plain


def _slots(where: Where, job_refs: set[str]) -> list[Any]:
    # Slot ads are large (hundreds of attributes) and a facility has
    # thousands: read only what matching needs, the attributes the job's
    # requirements name and those the slots' own policy names (found by
    # reading it; references nest, hence the rounds).
    projection = set(_SLOT_PROJECTION) | job_refs
    while True:
        slots = _collector(where).query(htcondor2.AdType.Startd, projection=sorted(projection))
        wanted = set(projection)
        for slot in slots[:20]:  # the slots of a pool share a few policies
            for attribute in ("Requirements", "START", "WithinResourceLimits"):
                wanted |= _referenced(slot, attribute, other=False)
        if wanted <= projection:
            return slots
        projection = wanted


def _referenced(ad: Any, attribute: str, other: bool) -> set[str]:
    """Attribute names an expression of ``ad`` reads: of the matched ad (``other``) or its own."""
    if attribute not in ad:
        return set()
    expression = ad.lookup(attribute)
    refs = ad.externalRefs(expression) if other else ad.internalRefs(expression)
    names = set()
    for ref in map(str, refs):
        scope, _, name = ref.rpartition(".")
        if scope.upper() in ("", "TARGET", "MY"):
            names.add(name)
    return names


# A job's request attribute -> the slot's: what a worker group's shape asks.
_REQUESTS = {"RequestCpus": "Cpus", "RequestMemory": "Memory", "RequestDisk": "Disk",
             "RequestGPUs": "GPUs"}  # fmt: skip


def _too_large(job: Any, slots: list[Any]) -> str | None:
    """The first request no slot of the pool has room for, said plainly."""
    for request, resource in _REQUESTS.items():
        try:
            wanted = job.eval(request)
        except Exception:
            continue
        if not isinstance(wanted, int | float) or wanted <= 0:
            continue
        sizes = [slot.get(resource, 0) for slot in slots]
        most = max((size for size in sizes if isinstance(size, int | float)), default=0)
        if wanted > most:
            return f"it asks for {wanted:g} {resource}, the pool's largest slot has {most:g}"
    return None


def _whole_slots(slots: list[Any]) -> list[Any]:
    """The pool's configured slots, each as if empty: could it ever run the job?

    Dynamic slots are pieces of a partitionable one and are left out; a
    partitionable slot is judged by its total resources, not what is free.
    """
    whole = []
    for slot in slots:
        if slot.get("DynamicSlot") is True:
            continue
        if slot.get("PartitionableSlot") is True:
            for resource in ("Cpus", "Memory", "Disk", "GPUs"):
                total = slot.get(f"TotalSlot{resource}")
                if isinstance(total, int | float):
                    slot[resource] = total
        whole.append(slot)
    return whole
