"""Example tools for a phone agent: the time in a city and an order lookup.

They are what ``pipelines.yaml`` hands to its ``tool_router``. Each docstring becomes the
description the model reads, and each ``Args:`` line the description of that parameter, so
they are written for the model. Both are ``async`` because they never block (a blocking tool
may be a plain ``def``: the router runs it in a thread).
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Literal

ORDERS_FILE = Path(__file__).with_name("orders.json")

#: city -> (IANA zone, standard UTC offset in hours used when the system has no tz database)
CITIES: dict[str, tuple[str, float]] = {
    "London": ("Europe/London", 0),
    "Paris": ("Europe/Paris", 1),
    "Berlin": ("Europe/Berlin", 1),
    "Madrid": ("Europe/Madrid", 1),
    "Rome": ("Europe/Rome", 1),
    "Athens": ("Europe/Athens", 2),
    "Moscow": ("Europe/Moscow", 3),
    "Dubai": ("Asia/Dubai", 4),
    "Mumbai": ("Asia/Kolkata", 5.5),
    "Singapore": ("Asia/Singapore", 8),
    "Beijing": ("Asia/Shanghai", 8),
    "Tokyo": ("Asia/Tokyo", 9),
    "Sydney": ("Australia/Sydney", 10),
    "Auckland": ("Pacific/Auckland", 12),
    "Honolulu": ("Pacific/Honolulu", -10),
    "Los Angeles": ("America/Los_Angeles", -8),
    "San Francisco": ("America/Los_Angeles", -8),
    "Denver": ("America/Denver", -7),
    "Chicago": ("America/Chicago", -6),
    "New York": ("America/New_York", -5),
    "Toronto": ("America/Toronto", -5),
    "Mexico City": ("America/Mexico_City", -6),
    "Sao Paulo": ("America/Sao_Paulo", -3),
    "Buenos Aires": ("America/Argentina/Buenos_Aires", -3),
    "Cairo": ("Africa/Cairo", 2),
    "Lagos": ("Africa/Lagos", 1),
    "Nairobi": ("Africa/Nairobi", 3),
    "Johannesburg": ("Africa/Johannesburg", 2),
}


def _key(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(plain.replace("-", " ").split()).casefold()


_BY_KEY = {_key(name): name for name in CITIES}


def city_zone(city: str) -> tuple[str, tzinfo]:
    """The canonical city name and its time zone: the system tz database (``zoneinfo``) when
    it is there, else the city's fixed standard offset. Raises ValueError for an unknown city,
    listing the known ones."""
    name = _BY_KEY.get(_key(city))
    if name is None:
        known = ", ".join(sorted(CITIES))
        raise ValueError(f"unknown city {city!r}; known cities: {known}")
    zone, hours = CITIES[name]
    try:
        from zoneinfo import ZoneInfo

        return name, ZoneInfo(zone)
    except Exception:  # no tz database on this system
        return name, timezone(timedelta(hours=hours), zone)


def local_time(city: str, now: datetime) -> tuple[str, datetime]:
    """``now`` (an aware datetime) as the wall-clock time in ``city``: (canonical name, time)."""
    name, tz = city_zone(city)
    return name, now.astimezone(tz)


def describe_time(city: str, now: datetime, clock: Literal["24h", "12h"] = "24h") -> str:
    """The sentence :func:`get_time` returns, for a given ``now``."""
    name, t = local_time(city, now)
    hhmm = t.strftime("%H:%M") if clock == "24h" else t.strftime("%I:%M %p").lstrip("0")
    offset = t.strftime("%z")
    utc = f"UTC{offset[:3]}:{offset[3:]}"
    return f"It is {hhmm} on {t.strftime('%A')} {t.day} {t.strftime('%B %Y')} in {name} ({utc})."


async def get_time(city: str, clock: Literal["24h", "12h"] = "24h") -> str:
    """Get the current local time and date in a city.

    Use this when the caller asks what time it is somewhere. Only major cities are known; if
    the city is unknown the error lists the known ones.

    Args:
        city: the city name in English, e.g. "Paris" or "New York"
        clock: "24h" for 14:05, "12h" for 2:05 PM
    """
    return describe_time(city, datetime.now(UTC), clock)


_orders: dict[str, dict[str, Any]] | None = None


def _load_orders() -> dict[str, dict[str, Any]]:
    global _orders
    if _orders is None:
        _orders = json.loads(ORDERS_FILE.read_text(encoding="utf-8"))
    return _orders


async def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up a customer's order: its status, items, total, carrier, tracking number and
    expected delivery date.

    Args:
        order_id: the order number the caller reads out, like "A1001" (letters and digits;
            spaces, dashes and a leading '#' are ignored)
    """
    orders = _load_orders()
    key = "".join(ch for ch in order_id.upper() if ch.isalnum())
    order = orders.get(key)
    if order is None:
        raise LookupError(
            f"no order {order_id!r}; order numbers look like A1001: ask the caller to repeat it"
        )
    return {"order_id": key, **order}
