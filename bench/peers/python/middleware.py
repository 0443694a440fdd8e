"""Pure ASGI middleware for the users API: an access log line per request and a request
timeout.

They are plain ASGI callables, not Starlette's BaseHTTPMiddleware, so a request does not
pay for the extra task and memory streams that BaseHTTPMiddleware adds.
"""

import asyncio
import json
import logging
import time

from asgi_correlation_id import correlation_id
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_logger = logging.getLogger("peer.access")


class AccessLogMiddleware:
    """Logs method, path, status, latency, request id and client address of each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        # An exception that escapes the app becomes a 500 in Starlette's
        # ServerErrorMiddleware, outside this one, so 500 is the status to log for it.
        status = 500

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            latency_ms = (time.perf_counter() - started) * 1000
            client = scope.get("client")
            access_logger.info(
                "%s %s %d %.3f ms request_id=%s client=%s",
                scope["method"],
                scope["path"],
                status,
                latency_ms,
                correlation_id.get(),
                client[0] if client else "-",
            )


class TimeoutMiddleware:
    """Cancels a request that runs longer than `timeout_seconds` and responds with 504.

    A response that has already started cannot be replaced, so a request that times out
    after its first byte is cancelled and its connection closed by the server.
    """

    def __init__(self, app: ASGIApp, timeout_seconds: float) -> None:
        self.app = app
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        response_started = False

        async def send_tracking_start(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        deadline = asyncio.timeout(self.timeout_seconds)
        try:
            async with deadline:
                await self.app(scope, receive, send_tracking_start)
        except TimeoutError:
            # A TimeoutError that the app raised itself is not this deadline's.
            if not deadline.expired() or response_started:
                raise
            await self._send_timeout(send)

    async def _send_timeout(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Gateway Timeout",
                "status": 504,
                "detail": f"the request took longer than {self.timeout_seconds:g} s",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 504,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
