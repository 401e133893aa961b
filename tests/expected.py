"""What each endpoint must answer, computed in Python from the events a test sent.

Revenue is summed the way the database does: each event's price × quantity (a double)
rounded to 15 significant digits as PostgreSQL's float8 → numeric does, then added
exactly. Orders and ties therefore match the database's to the last digit.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from cartpulse.project.types import parse_time

ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)
INTERVALS = {"1 minute": timedelta(minutes=1), "15 minutes": timedelta(minutes=15),
             "1 hour": timedelta(hours=1), "1 day": timedelta(days=1)}


def revenue(e: dict) -> Decimal:
    return Decimal(format(float(e["price"]) * e["quantity"], ".15g"))


def _time(value) -> datetime:
    if isinstance(value, str) and len(value) == 10:  # a date alone means its midnight
        value += " 00:00:00"
    return value if isinstance(value, datetime) else parse_time(value)


def in_range(e: dict, start_date=None, end_date=None) -> bool:
    t = _time(e["event_time"])
    return (start_date is None or t >= _time(start_date)) and (end_date is None or t < _time(end_date))


def top_products(events, limit=10, start_date=None, end_date=None, category=None, country=None) -> list[dict]:
    quantity: Counter = Counter()
    total: defaultdict = defaultdict(Decimal)
    for e in events:
        if (e["event_type"] == "purchase" and in_range(e, start_date, end_date)
                and category in (None, e["category"]) and _among(country, e["country"])):
            quantity[e["product_id"]] += e["quantity"]
            total[e["product_id"]] += revenue(e)
    ranked = sorted(total, key=lambda p: (-total[p], p.encode()))[:limit]
    return [{"product_id": p, "total_quantity": quantity[p], "total_revenue": float(total[p])} for p in ranked]


def _among(wanted, value) -> bool:
    """A filter of one value or (an Array parameter) a list of them; None lets all through."""
    return wanted is None or value in (wanted if isinstance(wanted, list) else [wanted])


def events_by_country(events, start_date=None, end_date=None, event_type=None, country=None) -> list[dict]:
    counts = Counter(e["country"] for e in events
                     if in_range(e, start_date, end_date) and event_type in (None, e["event_type"])
                     and _among(country, e["country"]))
    return [{"country": c, "event_count": n} for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))]


def bucket(value, width: timedelta = timedelta(minutes=15)) -> datetime:
    return ORIGIN + ((_time(value) - ORIGIN) // width) * width


def total_revenue(events, start_date=None, end_date=None, interval="15 minutes", country=None) -> list[dict]:
    total: defaultdict = defaultdict(Decimal)
    for e in events:
        if e["event_type"] == "purchase" and in_range(e, start_date, end_date) and _among(country, e["country"]):
            total[bucket(e["event_time"], INTERVALS[interval])] += revenue(e)
    return [{"time_bin": b.strftime("%Y-%m-%d %H:%M:%S"), "total_revenue": float(r)} for b, r in sorted(total.items())]


def same(actual: list[dict], expected: list[dict]) -> bool:
    """Row-for-row equality, floats compared to 1e-9 relative (they travel as doubles)."""
    if len(actual) != len(expected):
        return False
    for a, e in zip(actual, expected):
        if a.keys() != e.keys():
            return False
        for key, value in e.items():
            got = a[key]
            if isinstance(value, float):
                if abs(float(got) - value) > 1e-9 * max(1.0, abs(value)):
                    return False
            elif str(got) != str(value):
                return False
    return True
