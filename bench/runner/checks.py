"""Correctness checks of a running server, made before its load runs: the hello body, and
the status and JSON shape of the users and profile routes."""

import json
import random

from .postgres import ORDERS_PER_USER, USER_COUNT
from .servers import ServerFailed, http_get

USER_KEYS = {"id", "name", "email", "created_at"}
PROFILE_KEYS = {"user", "orders", "preferences"}
PROFILE_ORDERS = 10


def check_hello(name: str, port: int) -> None:
    status, headers, body = http_get(port, "/")
    if status != 200 or body != b"Hello, World!":
        raise ServerFailed(f"{name}: GET / returned {status} {body[:100]!r}, expected 200 'Hello, World!'")
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "text/plain":
        raise ServerFailed(f"{name}: GET / has content type {headers.get('content-type')!r}, expected text/plain")


def check_user(name: str, port: int) -> None:
    for user_id in (1, USER_COUNT, random.randint(2, USER_COUNT - 1)):
        path = f"/api/v1/users/{user_id}"
        status, headers, body = http_get(port, path)
        if status != 200:
            raise ServerFailed(f"{name}: GET {path} returned {status}, expected 200: {body[:200]!r}")
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise ServerFailed(f"{name}: GET {path} has content type {headers.get('content-type')!r}, "
                               "expected application/json")
        try:
            user = json.loads(body)
        except ValueError as err:
            raise ServerFailed(f"{name}: GET {path} returned invalid JSON ({err}): {body[:200]!r}") from None

        expected = {"id": user_id, "name": f"User {user_id}", "email": f"user{user_id}@example.com"}
        if not isinstance(user, dict) or set(user) != USER_KEYS:
            raise ServerFailed(f"{name}: GET {path} returned {user!r}, expected the keys {sorted(USER_KEYS)}")
        if any(user[key] != value for key, value in expected.items()):
            raise ServerFailed(f"{name}: GET {path} returned {user!r}, expected {expected}")
        if not isinstance(user["created_at"], str):
            raise ServerFailed(f"{name}: GET {path} has created_at {user['created_at']!r}, expected a string")

    status, _, _ = http_get(port, f"/api/v1/users/{USER_COUNT + 1}")
    if status != 404:
        raise ServerFailed(f"{name}: GET /api/v1/users/{USER_COUNT + 1} returned {status}, expected 404")


def check_profile(name: str, port: int) -> None:
    """Check that a profile has the user, its newest orders newest first, and preferences."""
    for user_id in (1, USER_COUNT):
        path = f"/api/v1/users/{user_id}/profile"
        status, _, body = http_get(port, path)
        if status != 200:
            raise ServerFailed(f"{name}: GET {path} returned {status}, expected 200: {body[:200]!r}")
        try:
            profile = json.loads(body)
        except ValueError as err:
            raise ServerFailed(f"{name}: GET {path} returned invalid JSON ({err}): {body[:200]!r}") from None
        if not isinstance(profile, dict) or set(profile) != PROFILE_KEYS:
            raise ServerFailed(f"{name}: GET {path} returned {body[:200]!r}, expected the keys "
                               f"{sorted(PROFILE_KEYS)}")
        order_ids = [order.get("id") for order in profile["orders"]]
        expected_count = min(PROFILE_ORDERS, ORDERS_PER_USER)
        if profile["user"].get("id") != user_id or len(order_ids) != expected_count:
            raise ServerFailed(f"{name}: GET {path} returned user {profile['user'].get('id')} with "
                               f"{len(order_ids)} orders, expected user {user_id} with {expected_count}")
        if order_ids != sorted(order_ids, reverse=True):
            raise ServerFailed(f"{name}: GET {path} returned orders {order_ids}, expected newest first")
        if not isinstance(profile["preferences"], dict) or "time_zone" not in profile["preferences"]:
            raise ServerFailed(f"{name}: GET {path} returned preferences {profile['preferences']!r}")

    status, _, _ = http_get(port, f"/api/v1/users/{USER_COUNT + 1}/profile")
    if status != 404:
        raise ServerFailed(f"{name}: GET /api/v1/users/{USER_COUNT + 1}/profile returned {status}, "
                           "expected 404")


def check_server(name: str, port: int, scenarios: tuple[str, ...]) -> None:
    check_hello(name, port)
    if "db" in scenarios or "stress" in scenarios:
        check_user(name, port)
    if "profile" in scenarios or "profile-stress" in scenarios:
        check_profile(name, port)
