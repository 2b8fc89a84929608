"""Work-arounds for the dask-gateway client with current distributed."""

from __future__ import annotations

from typing import Any

from dask_gateway import Gateway


class ClosingOnceGateway(Gateway):
    """A ``Gateway`` whose ``close()`` may be called again.

    ``Gateway.close()`` reads ``self.loop``, which distributed's
    ``LoopRunner`` refuses once the loop has stopped, so a second call
    raises. ``Gateway.__del__`` makes that second call for every gateway
    closed before it is collected ("Exception ignored in Gateway.__del__"),
    and, if collection happens inside another gateway's loop thread, it
    waits there for the loop runners' shared lock.
    """

    _closed_here = False

    def close(self) -> Any:
        if self.asynchronous:
            return super().close()
        if self._closed_here:
            return None
        self._closed_here = True
        return super().close()
