"""Synthetic events of the seed's schema: realistic shapes, reproducible from a seed.

Used by the tests (to compare endpoints with a computation in Python), by the
benchmark and by ``cartpulse generate``. Product popularity is Zipf-like, countries
include non-ASCII names, and about one event in ten is a purchase.
"""

from __future__ import annotations

import random
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
        # Zipf-like popularity: product k is picked with weight 1/k.
        self.weights = [1.0 / (k + 1) for k in range(products)]
        self.category = {p: self.rng.choice(CATEGORIES) for p in self.products}
        self.price = {p: round(self.rng.uniform(2, 500), 2) for p in self.products}
        self.country_weights = [1.0 / (k + 1) ** 0.7 for k in range(len(COUNTRIES))]

    def event(self, when: datetime | None = None) -> dict:
        rng = self.rng
        product = rng.choices(self.products, self.weights)[0]
        event_type = rng.choices(EVENT_TYPES, EVENT_WEIGHTS)[0]
        when = when or self.start + timedelta(seconds=rng.randrange(self.span_seconds))
        user = rng.randrange(1, 200_000)
        return {
            "event_time": when.strftime("%Y-%m-%d %H:%M:%S"),
            "event_type": event_type,
            "user_id": f"u{user}",
            "product_id": product,
            "category": self.category[product],
            "price": self.price[product],
            "quantity": rng.randint(1, 4) if event_type in ("purchase", "add_to_cart") else 1,
            "session_id": f"s{user}-{rng.randrange(1, 50)}",
            "country": rng.choices(COUNTRIES, self.country_weights)[0],
        }

    def events(self, n: int) -> list[dict]:
        return [self.event() for _ in range(n)]
