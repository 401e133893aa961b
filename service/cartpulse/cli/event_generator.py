"""Synthetic events of the seed's schema: realistic shapes, reproducible from a seed.

Used by the tests (to compare endpoints with a computation in Python), by the
benchmark and by ``cartpulse generate``. Product popularity is Zipf-like, countries
include non-ASCII names, and about one event in ten is a purchase.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect
from datetime import datetime, timedelta, timezone

COUNTRIES = [
    "United States", "France", "Germany", "United Kingdom", "Spain", "Italy", "Japan", "Brazil",
    "Canada", "Australia", "Netherlands", "Sweden", "Norway", "Denmark", "Poland", "Portugal",
    "Mexico", "Argentina", "Chile", "India", "China", "South Korea", "Türkiye", "Ελλάδα",
    "Côte d'Ivoire", "日本", "Österreich", "Česko", "România", "Україна", "Ireland", "Belgium",
    "Switzerland", "Finland", "New Zealand", "South Africa", "Egypt", "Morocco", "Việt Nam", "Ísland",
]
CATEGORIES = ["shoes", "shirts", "electronics", "books", "toys", "home", "beauty", "sports",
              "garden", "grocery", "jewelry", "music"]
EVENT_TYPES = ["view", "add_to_cart", "remove_from_cart", "purchase"]
EVENT_WEIGHTS = [60, 22, 8, 10]


class EventGenerator:
    def __init__(self, seed: int = 42, products: int = 5000, start: datetime | None = None,
                 span: timedelta = timedelta(days=30)):
        self.rng = random.Random(seed)
        self.start = start or datetime(2026, 10, 1, tzinfo=timezone.utc)
        self.span_seconds = int(span.total_seconds())
        self.products = [f"p{i:05d}" for i in range(1, products + 1)]
        # Zipf-like popularity: product k is picked with weight 1/k (cumulative, so that
        # each pick is a bisection, not a pass over every product).
        self.cum_weights = list(itertools.accumulate(1.0 / (k + 1) for k in range(products)))
        # A product's category and price follow from the product alone, so that every
        # generator (whatever its seed) describes the same catalogue.
        catalogue = [random.Random(k) for k in range(1, products + 1)]
        self.category = {p: r.choice(CATEGORIES) for p, r in zip(self.products, catalogue)}
        self.price = {p: round(r.uniform(2, 500), 2) for p, r in zip(self.products, catalogue)}
        self.country_cum = list(itertools.accumulate(1.0 / (k + 1) ** 0.7 for k in range(len(COUNTRIES))))
        self.event_cum = list(itertools.accumulate(EVENT_WEIGHTS))
        self._days: dict[int, str] = {}

    def event(self, when: datetime | None = None) -> dict:
        """One event; at ``when`` if given, else at a uniformly random second of the span.

        Written for speed (the benchmark makes millions): bisection on cumulative
        weights and string formatting by hand instead of random.choices and strftime.
        """
        r = self.rng.random
        product = self.products[bisect(self.cum_weights, r() * self.cum_weights[-1])]
        event_type = EVENT_TYPES[bisect(self.event_cum, r() * self.event_cum[-1])]
        if when is None:
            day, second = divmod(int(r() * self.span_seconds), 86400)
            hour, second = divmod(second, 3600)
            minute, second = divmod(second, 60)
            stamp = f"{self._day(day)} {hour:02d}:{minute:02d}:{second:02d}"
        else:
            stamp = when.strftime("%Y-%m-%d %H:%M:%S")
        user = int(r() * 200_000) + 1
        return {
            "event_time": stamp,
            "event_type": event_type,
            "user_id": f"u{user}",
            "product_id": product,
            "category": self.category[product],
            "price": self.price[product],
            "quantity": 1 + int(r() * 4) if event_type in ("purchase", "add_to_cart") else 1,
            "session_id": f"s{user}-{1 + int(r() * 49)}",
            "country": COUNTRIES[bisect(self.country_cum, r() * self.country_cum[-1])],
        }

    def _day(self, index: int) -> str:
        if index not in self._days:
            self._days[index] = (self.start + timedelta(days=index)).strftime("%Y-%m-%d")
        return self._days[index]

    def events(self, n: int) -> list[dict]:
        return [self.event() for _ in range(n)]
