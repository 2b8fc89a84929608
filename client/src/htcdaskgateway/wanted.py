"""What ``scale()`` and ``adapt()`` ask for, checked before anything is set or submitted."""

from __future__ import annotations

import math
import numbers

from dask.utils import parse_timedelta

from .errors import SettingError
from .targets import MIN_ADAPT_INTERVAL, AdaptTarget, ScaleTarget


def worker_count(n: object, what: str) -> int:
    """A whole number of workers >= 0, or a ``SettingError`` naming ``what``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise SettingError(
            f"{what} takes a whole number of workers, got {n!r} ({type(n).__name__})"
        )
    if n < 0:
        raise SettingError(f"{what} takes a number of workers >= 0, got {n}")
    return int(n)


def seconds(value: object, what: str) -> float:
    """A duration in seconds (a number, or dask's "3s"), or a ``SettingError``."""
    try:
        parsed = parse_timedelta(value)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError):
        parsed = None
    if (
        isinstance(value, bool)
        or not isinstance(parsed, numbers.Real)
        or not math.isfinite(parsed)
        or parsed < 0
    ):
        raise SettingError(f"{what} takes a duration in seconds (or '3s'), got {value!r}")
    return float(parsed)


def job_count(n: object, what: str, max_jobs: int) -> int:
    """``worker_count``, at most ``max_jobs``."""
    n = worker_count(n, what)
    if n > max_jobs:
        raise SettingError(
            f"{what} asks for {n} worker jobs; gateway.htcondor.max-jobs allows {max_jobs} "
            "per cluster (raise it in your dask config if the pool can take more)"
        )
    return n


def scale_target(n: object, what: str, max_jobs: int) -> ScaleTarget:
    """The target ``scale(n)`` sets, checked against ``max-jobs``, which it carries."""
    return ScaleTarget(job_count(n, what, max_jobs), cap=max_jobs)


def adapt_target(
    minimum: int | None,
    maximum: int | None,
    *,
    interval: str | float,
    wait_count: int,
    target_duration: str | float,
    max_jobs: int,
) -> AdaptTarget:
    """The adaptive policy ``adapt()`` sets, checked."""
    low = 0 if minimum is None else job_count(minimum, "adapt(minimum=...)", max_jobs)
    high = max_jobs if maximum is None else job_count(maximum, "adapt(maximum=...)", max_jobs)
    if high < low:
        raise SettingError(f"adapt() needs minimum <= maximum, got {low} > {high}")
    if isinstance(wait_count, bool) or not isinstance(wait_count, int) or wait_count < 1:
        raise SettingError(f"adapt(wait_count=...) takes a whole number >= 1, got {wait_count!r}")
    every = seconds(interval, "adapt(interval=...)")
    if every < MIN_ADAPT_INTERVAL:
        # Each interval is a look at the scheduler and the schedd.
        raise SettingError(
            f"adapt(interval=...) takes at least {MIN_ADAPT_INTERVAL:g} s, got {interval!r}"
        )
    duration = seconds(target_duration, "adapt(target_duration=...)")
    if duration <= 0:
        # The scheduler divides its load by it.
        raise SettingError(
            f"adapt(target_duration=...) takes more than 0 s, got {target_duration!r}"
        )
    return AdaptTarget(
        minimum=low, maximum=high, interval=every, wait_count=wait_count,
        target_duration=duration,
    )  # fmt: skip
