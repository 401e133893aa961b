"""Row validation: what is accepted, what is quarantined, and the reason given."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from cartpulse.ingest import rows
from cartpulse.project.types import BadValue, parse_time
from support import datasources

SOURCE = datasources()["ecommerce_events"]


def validate(obj):
    return rows.validate(obj, SOURCE)


def parse_body(body):
    return rows.parse_body(body, SOURCE)


GOOD = {"event_time": "2026-10-05 10:15:00", "event_type": "purchase", "user_id": "u1", "product_id": "p1",
        "category": "shoes", "price": 10, "quantity": 2, "session_id": "s1", "country": "Côte d'Ivoire"}
UTC = timezone.utc


@pytest.mark.parametrize("value, want", [
    ("2026-10-05 10:15:00", datetime(2026, 10, 5, 10, 15, tzinfo=UTC)),
    ("2026-10-05T10:15:00", datetime(2026, 10, 5, 10, 15, tzinfo=UTC)),
    ("2026-10-05T10:15:00Z", datetime(2026, 10, 5, 10, 15, tzinfo=UTC)),
    ("2026-10-05T12:15:00+02:00", datetime(2026, 10, 5, 10, 15, tzinfo=UTC)),
    ("2026-10-05 10:15:00.250", datetime(2026, 10, 5, 10, 15, 0, 250000, tzinfo=UTC)),
    (1791195300, datetime(2026, 10, 5, 10, 15, tzinfo=UTC)),
    (1791195300.5, datetime(2026, 10, 5, 10, 15, 0, 500000, tzinfo=UTC)),
])
def test_accepted_times(value, want):
    assert parse_time(value) == want


@pytest.mark.parametrize("value", ["2026-10-05", "yesterday", "2026-13-05 10:15:00", "05/10/2026 10:15:00",
                                   True, None, [], "3026-01-01 00:00:00", 1e20])
def test_rejected_times(value):
    with pytest.raises(BadValue):
        parse_time(value)
    batch = parse_body(json.dumps({**GOOD, "event_time": value}).encode())
    assert [q.columns for q in batch.quarantined] == [["event_time"]]


def test_valid_row_types():
    row = validate(GOOD)
    assert row[5] == 10.0 and isinstance(row[5], float)  # an integer where Float64 is due
    assert row[6] == 2 and row[8] == "Côte d'Ivoire"


def test_unknown_fields_are_ignored():
    assert validate({**GOOD, "coupon": "X1"}) == validate(GOOD)


@pytest.mark.parametrize("field, literal, words", [
    ("quantity", "-1", "negative"), ("quantity", "1.5", "integer"), ("quantity", '"2"', "integer"),
    ("quantity", str(2**63), "Int64"), ("price", '"9.99"', "number"), ("price", "1e400", "finite"),
    ("price", "NaN", "finite"), ("price", "-Infinity", "finite"), ("price", "true", "number"),
    ("country", "7", "string"), ("country", '"' + "x" * 1001 + '"', "longer"),
    ("user_id", '"a\\u0000b"', "NUL"), ("session_id", '"\\ud800"', "UTF-8"),
])
def test_row_errors_name_the_field(field, literal, words):
    text = json.dumps({**GOOD, field: "__value__"}).replace('"__value__"', literal)
    batch = parse_body(text.encode())
    assert not batch.rows and len(batch.quarantined) == 1
    q = batch.quarantined[0]
    assert q.columns == [field] and words in q.errors[0]


def test_bad_lines_among_good_ones_are_quarantined_not_fatal():
    good = json.dumps(GOOD).encode()
    body = good + b"\n" + b"{broken\n" + b'{"country": "\xff"}\n' + b"[1, 2]\n" + good
    batch = parse_body(body)
    assert len(batch.rows) == 2
    assert [(q.line, q.columns) for q in batch.quarantined] == [(2, ["line"]), (3, ["line"]), (4, ["line"])]
    assert "not valid JSON" in batch.quarantined[0].errors[0]
    assert "UTF-8" in batch.quarantined[1].errors[0]
    assert "object" in batch.quarantined[2].errors[0]


def test_missing_fields_are_all_named():
    batch = parse_body(b'{"event_time": "2026-10-05 10:15:00"}')
    assert batch.quarantined[0].columns == ["event_type", "user_id", "product_id", "category", "price",
                                             "quantity", "session_id", "country"]


def test_fast_path_agrees_with_the_thorough_one():
    """The fast path compiled for the data source gives exactly what validate() gives."""
    from cartpulse.cli.event_generator import EventGenerator
    from cartpulse.ingest.fastpath import fast_row_for

    _fast_row = fast_row_for(SOURCE)
    events = EventGenerator(seed=9).events(2000) + [
        {**GOOD, "price": 3}, {**GOOD, "price": 2.5, "quantity": 0}, {**GOOD, "event_time": "2026-10-05T10:15:00"},
        {**GOOD, "event_time": "1899-12-31 23:59:59"}, {**GOOD, "quantity": 2.0}, {**GOOD, "country": "x" * 1000},
        {**GOOD, "event_time": "2026-10-05 10:15+01"},  # 19 characters, with an offset
    ]
    for event in events:
        fast = _fast_row(event)
        if fast is not None:
            assert fast == validate(event)
    assert sum(_fast_row(e) is not None for e in events) >= 2000
    assert _fast_row({**GOOD, "event_time": "1899-12-31 23:59:59"}) is None
    assert validate({**GOOD, "event_time": "2026-10-05 10:15+01"})[0] == datetime(2026, 10, 5, 9, 15, tzinfo=UTC)
    for bad in ({**GOOD, "quantity": -1}, {**GOOD, "country": "x" * 1001}, {**GOOD, "price": "1"}, {"price": 1.0}):
        assert _fast_row(bad) is None  # the fast path never accepts what validate() refuses
