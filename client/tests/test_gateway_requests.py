"""The gateway client against a real HTTP server that is briefly unavailable,
as a gateway is behind its proxy while it is upgraded."""

import asyncio

import pytest
from aiohttp import web

from htcdaskgateway import compat
from htcdaskgateway.compat import ClosingOnceGateway


def _serve(answers: list[int], first_after: float = 0.0):
    """An API whose GET /api/v1/clusters/ answers each status in turn, then an empty list.

    The first answer comes ``first_after`` seconds late.
    """
    calls = []

    async def clusters(request: web.Request) -> web.Response:
        calls.append(request.method)
        if len(calls) == 1:
            await asyncio.sleep(first_after)
        if answers:
            return web.Response(status=answers.pop(0), text="upstream timeout")
        return web.json_response({})

    async def start():
        app = web.Application()
        app.router.add_route("*", "/api/v1/clusters/", clusters)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return runner, f"http://127.0.0.1:{port}"

    return start, calls


def _list_clusters(start, error_match: str | None = None) -> None:
    """``list_clusters()`` against the served API: it returns [], or raises
    an error matching ``error_match``."""

    async def body():
        runner, address = await start()
        try:
            async with ClosingOnceGateway(address=address, asynchronous=True) as gateway:
                if error_match is None:
                    assert await gateway.list_clusters() == []
                else:
                    with pytest.raises(Exception, match=error_match):
                        await gateway.list_clusters()
        finally:
            await runner.cleanup()

    asyncio.run(body())


def test_reads_are_retried_while_the_gateway_passes_through_a_restart():
    start, calls = _serve([504, 502, 503])
    _list_clusters(start)
    assert calls == ["GET"] * 4


def test_a_read_whose_first_answer_came_after_the_retry_time_is_retried_once(monkeypatch):
    """A proxy held the request for its own timeout (Traefik: a 30 s dial to a
    pod that was gone), then answered 504; its routes are current by then."""
    monkeypatch.setattr(compat, "READ_RETRY_SECONDS", 0.2)
    start, calls = _serve([504, 504], first_after=0.3)
    _list_clusters(start, error_match="504")
    # The late 504, one retry (504 again), and no more: the time is up.
    assert calls == ["GET", "GET"]


def test_other_errors_are_not_retried():
    start, calls = _serve([403])
    _list_clusters(start, error_match="refused GET")
    assert calls == ["GET"]


def test_a_clusters_own_gateway_retries_reads_too():
    """The gateway a cluster object builds for itself behaves as ``HTCGateway`` does."""
    from htcdaskgateway import HTCGatewayCluster

    calls = []

    async def cluster(request: web.Request) -> web.Response:
        calls.append(request.method)
        if len(calls) == 1:
            return web.Response(status=503, text="restarting")
        return web.json_response({"error": "Cluster not found"}, status=404)

    async def body():
        app = web.Application()
        app.router.add_get("/api/v1/clusters/{name}", cluster)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        address = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            connecting = HTCGatewayCluster.from_name("abc", address=address, asynchronous=True)
            assert isinstance(connecting.gateway, ClosingOnceGateway)
            with pytest.raises(ValueError, match="Cluster not found"):
                await connecting
        finally:
            await runner.cleanup()

    asyncio.run(body())
    assert calls == ["GET", "GET"]
