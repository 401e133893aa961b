"""Concurrent writers, readers and `dbt run`s against the production server.

Each batch carries its own marker (country C<i>, product P<i>, minute <i>), so an answer
shows exactly which batches it counted. Every answer must count each batch fully or not
at all, must count every batch acknowledged before the request was sent, and nothing
that was not sent; after the last acknowledgement, answers are exact.
"""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone

import expected
from cartpulse.ops.dbt_runner import run_dbt
from support import truncate_events

BASE = datetime(2026, 11, 1, tzinfo=timezone.utc)
WRITERS, BATCHES, SIZE = 3, 12, 20


def batch(i: int) -> list[dict]:
    rng = random.Random(i)
    when = (BASE + timedelta(minutes=i, seconds=rng.randrange(60))).strftime("%Y-%m-%d %H:%M:%S")
    return [{"event_time": when, "event_type": "purchase", "user_id": f"u{i}", "product_id": f"P{i}",
             "category": "c", "price": round(rng.uniform(1, 100), 2), "quantity": rng.randint(1, 3),
             "session_id": f"s{i}", "country": f"C{i}"} for _ in range(SIZE)]


def test_every_answer_is_a_whole_prefix_of_acknowledged_batches(live_server, built):
    truncate_events(built.database_url)
    batches = {i: batch(i) for i in range(WRITERS * BATCHES)}
    started, acked, problems = set(), set(), []
    lock, done = threading.Lock(), threading.Event()

    def writer(w: int):
        for i in range(w * BATCHES, (w + 1) * BATCHES):
            with lock:
                started.add(i)
            status, body = live_server.post_events(batches[i])
            if status != 202 or body["successful_rows"] != SIZE:
                problems.append(f"batch {i}: {status} {body}")
                continue
            with lock:
                acked.add(i)

    def check(name: str, rows: list[dict], key: str, marker: str, want, before: set, after: set):
        seen = {}
        for row in rows:
            if not str(row[key]).startswith(marker):
                problems.append(f"{name}: unexpected row {row}")
                continue
            seen[int(row[key][len(marker):])] = row
        for i, row in seen.items():
            if i not in after:
                problems.append(f"{name}: batch {i} counted before it was sent")
            elif not want(i, row):
                problems.append(f"{name}: batch {i} counted partly or twice: {row}")
        for i in before - seen.keys():
            problems.append(f"{name}: acknowledged batch {i} missing")

    def reader():
        while not done.is_set():
            with lock:
                before = set(acked)
            by_country = live_server.pipe("events_by_country")
            top = live_server.pipe("top_products", limit=1000)
            with lock:
                after = set(started)
            check("events_by_country", by_country, "country", "C", lambda i, r: r["event_count"] == SIZE,
                  before, after)
            check("top_products", top, "product_id", "P",
                  lambda i, r: r["total_quantity"] == sum(e["quantity"] for e in batches[i]), before, after)

    def refresher():
        while not done.is_set():
            result = run_dbt(built, built.database_url, "run", "--select", "rollups", check=False, capture=True)
            if result.returncode != 0:
                problems.append(result.stdout[-2000:])

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    others = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=refresher)]
    for t in writers + others:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in others:
        t.join()
    assert not problems, problems[:10]

    events = [e for b in batches.values() for e in b]
    assert expected.same(live_server.pipe("events_by_country"), expected.events_by_country(events))
    assert expected.same(live_server.pipe("top_products", limit=1000), expected.top_products(events, limit=1000))
    assert expected.same(live_server.pipe("total_revenue", interval="1 minute"),
                         expected.total_revenue(events, interval="1 minute"))
