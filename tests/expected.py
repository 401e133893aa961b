"""What each endpoint must answer, computed in Python from the events a test sent."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

from cartpulse.events import parse_time


def top_products(events: list[dict], limit: int = 10) -> list[dict]:
    quantity: Counter = Counter()
    revenue: defaultdict = defaultdict(float)
    for e in events:
        if e["event_type"] == "purchase":
            quantity[e["product_id"]] += e["quantity"]
            revenue[e["product_id"]] += e["price"] * e["quantity"]
    ranked = sorted(revenue, key=lambda p: (-revenue[p], p))[:limit]
    return [{"product_id": p, "total_quantity": quantity[p], "total_revenue": revenue[p]} for p in ranked]


def events_by_country(events: list[dict]) -> list[dict]:
    counts = Counter(e["country"] for e in events)
    return [{"country": c, "event_count": n} for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def bucket(value, width: timedelta = timedelta(minutes=15)) -> datetime:
    ts = parse_time(value)
    origin = datetime(2000, 1, 1, tzinfo=timezone.utc)
    return origin + ((ts - origin) // width) * width


def total_revenue(events: list[dict]) -> list[dict]:
    revenue: defaultdict = defaultdict(float)
    for e in events:
        if e["event_type"] == "purchase":
            revenue[bucket(e["event_time"])] += e["price"] * e["quantity"]
    return [{"time_bin": b.strftime("%Y-%m-%d %H:%M:%S"), "total_revenue": r} for b, r in sorted(revenue.items())]


def same(actual: list[dict], expected: list[dict]) -> bool:
    """Row-for-row equality, floats compared to 1e-9 relative (sums may add in another order)."""
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
