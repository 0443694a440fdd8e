"""FastAPI peer in peregrine's benchmark.

The hello and liveness routes sit on the root app with no middleware. The users API is a
FastAPI sub-application mounted at /api/v1 with request id, real client IP, access log
and timeout middleware. serve.py runs the app on uvicorn with one worker process per core.

Reads DATABASE_URL, and WEB_CONCURRENCY (the worker count, set by serve.py) to size this
worker's share of the PostgreSQL pool.
"""

import json
import logging
import math
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from http import HTTPStatus

import asyncpg
from asgi_correlation_id import CorrelationIdMiddleware, correlation_id
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, field_serializer
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from middleware import AccessLogMiddleware, TimeoutMiddleware

# Pool sizes of every peer, shared out among the worker processes.
TOTAL_POOL_MAX_SIZE = 25
TOTAL_POOL_MIN_SIZE = 10

REQUEST_TIMEOUT_SECONDS = 10.0
MAX_BIGINT = 2**63 - 1

# Digits with an optional plus sign, the syntax that Go's strconv.ParseInt and Java's
# Long.parseLong accept for a positive number. int() alone would also take spaces,
# underscores and non-ASCII digits.
POSITIVE_INTEGER = re.compile(r"\+?[0-9]+")

SELECT_USER = "SELECT id, name, email, created_at FROM users WHERE id = $1"

logger = logging.getLogger("peer")


class User(BaseModel):
    id: int
    name: str
    email: str
    created_at: datetime

    @field_serializer("created_at")
    def serialize_created_at(self, created_at: datetime) -> str:
        """Formats RFC 3339 in UTC with six fraction digits, as every peer sends it."""
        return created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ProblemError(Exception):
    """An error that the API returns as an RFC 9457 problem details body."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def problem_response(status: int, detail: str) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def require_env(key: str) -> str:
    value = os.environ.get(key)
    if not value:
        raise RuntimeError(f"environment variable {key} is missing or empty")
    return value


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, asyncpg.Pool]]:
    """Opens this worker's share of the pool. The state reaches the mounted API too."""
    workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
    pool = await asyncpg.create_pool(
        require_env("DATABASE_URL"),
        min_size=math.ceil(TOTAL_POOL_MIN_SIZE / workers),
        max_size=math.ceil(TOTAL_POOL_MAX_SIZE / workers),
    )
    logger.info("worker %d opened a pool of up to %d connections", os.getpid(), pool.get_max_size())
    try:
        yield {"pool": pool}
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/", response_class=PlainTextResponse)
async def hello() -> str:
    return "Hello, World!"


@app.get("/livez", response_class=PlainTextResponse)
async def livez() -> str:
    return "ok\n"


api = FastAPI()


@api.exception_handler(ProblemError)
async def handle_problem(_: Request, exc: ProblemError) -> JSONResponse:
    return problem_response(exc.status, exc.detail)


@api.exception_handler(Exception)
async def handle_unexpected(_: Request, exc: Exception) -> JSONResponse:
    """Returns a 500 problem for an unhandled exception. Starlette still logs its traceback."""
    return problem_response(500, "the server failed to handle the request")


def parse_user_id(text: str) -> int | None:
    if POSITIVE_INTEGER.fullmatch(text) is None:
        return None
    user_id = int(text)
    return user_id if 1 <= user_id <= MAX_BIGINT else None


@api.get("/users/{user_id}")
async def get_user(user_id: str, request: Request) -> User:
    parsed_id = parse_user_id(user_id)
    if parsed_id is None:
        detail = f"user id must be a positive 64-bit integer, got {json.dumps(user_id)}"
        raise ProblemError(400, detail)

    pool: asyncpg.Pool = request.state.pool
    try:
        # asyncpg prepares the statement once per connection and caches it.
        row = await pool.fetchrow(SELECT_USER, parsed_id)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        logger.error("[%s] query user %d failed: %r", correlation_id.get(), parsed_id, exc)
        raise ProblemError(503, "the database is unavailable") from exc

    if row is None:
        raise ProblemError(404, f"no user with id {parsed_id}")
    return User(id=row["id"], name=row["name"], email=row["email"], created_at=row["created_at"])


# add_middleware puts each new middleware outside the ones before it, so a request passes
# them bottom to top: request id, real client IP, access log, timeout.
api.add_middleware(TimeoutMiddleware, timeout_seconds=REQUEST_TIMEOUT_SECONDS)
api.add_middleware(AccessLogMiddleware)
api.add_middleware(ProxyHeadersMiddleware, trusted_hosts="127.0.0.1")
api.add_middleware(CorrelationIdMiddleware, header_name="X-Request-Id", validator=None)

app.mount("/api/v1", api)
