"""The clock the background loops read and sleep on; tests inject their own.

A loop that reads one clock and sleeps on another cannot be tested without
real waits, so the clock carries its sleep too.
"""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    """Wall and monotonic time, and asyncio's sleep."""

    @staticmethod
    def time() -> float:
        return time.time()

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()

    @staticmethod
    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
