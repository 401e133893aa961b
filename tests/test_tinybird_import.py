"""`cartpulse tinybird import`: the seed's own Tinybird datafiles (tests/fixtures/tinybird/seed)
imported into a copy of the project, built with dbt, served, and answered exactly as
Python computes them on generated events and as CartPulse's own endpoints answer."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cartpulse.cli import tinybird_import
from support import built_copy, copy_project, ndjson

SEED = Path(__file__).parent / "fixtures" / "tinybird" / "seed"
UTC = timezone.utc
START = datetime(2026, 3, 1, tzinfo=UTC)


def events(n: int = 600) -> list[dict]:
    rng = random.Random(25)
    return [{"event_time": (START + timedelta(seconds=rng.randrange(3 * 86400))).strftime("%Y-%m-%d %H:%M:%S"),
             "event_type": rng.choice(["view", "view", "add_to_cart", "purchase"]), "user_id": f"u{rng.randrange(50)}",
             "product_id": f"p{rng.randrange(30):02d}", "category": rng.choice(["shoes", "hats"]),
             "price": rng.randrange(1, 400) / 4, "quantity": rng.randrange(1, 5), "session_id": f"s{rng.randrange(99)}",
             "country": rng.choice(["DE", "US", "FR", "ES", "IT"])} for _ in range(n)]


EVENTS = events()


def _in(e, start=None, end=None, country=None):
    return ((start is None or e["event_time"] >= start) and (end is None or e["event_time"] < end)
            and (country is None or e["country"] in country))


def top_products(start=None, end=None, category=None, country=None, limit=10):
    totals = defaultdict(lambda: [0, 0.0])
    for e in EVENTS:
        if e["event_type"] == "purchase" and _in(e, start, end, country) and category in (None, e["category"]):
            totals[e["product_id"]][0] += e["quantity"]
            totals[e["product_id"]][1] += e["price"] * e["quantity"]
    rows = [{"product_id": p, "total_quantity": q, "total_revenue": r} for p, (q, r) in totals.items()]
    return sorted(rows, key=lambda r: (-r["total_revenue"], r["product_id"]))[:limit]


def events_by_country(start=None, end=None, event_type=None, country=None):
    counts = defaultdict(int)
    for e in EVENTS:
        if _in(e, start, end, country) and event_type in (None, e["event_type"]):
            counts[e["country"]] += 1
    return sorted(({"country": c, "event_count": n} for c, n in counts.items()), key=lambda r: (-r["event_count"], r["country"]))


def total_revenue(start=None, end=None, country=None):
    bins = defaultdict(float)
    for e in EVENTS:
        if e["event_type"] == "purchase" and _in(e, start, end, country):
            t = datetime.strptime(e["event_time"], "%Y-%m-%d %H:%M:%S")
            bins[t.replace(minute=t.minute - t.minute % 15, second=0).strftime("%Y-%m-%d %H:%M:%S")] += e["price"] * e["quantity"]
    return [{"time_bin": b, "total_revenue": r} for b, r in sorted(bins.items())]


@pytest.fixture(scope="module")
def imported(built, server_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tinybird")
    project = copy_project(folder)
    lines: list[str] = []
    assert tinybird_import.run(project, SEED, prefix="tb_", out=lines.append) == 0, lines
    from cartpulse.app import create_app

    with built_copy(built, server_url, project, folder, "cartpulse_tb") as settings:
        app = create_app(settings)
        client = app.test_client()
        auth = {"Authorization": f"Bearer {settings.admin_token}"}
        for source in ("ecommerce_events", "tb_ecommerce_events"):
            r = client.post(f"/v0/events?name={source}", data=ndjson(EVENTS), headers=auth)
            assert r.status_code in (200, 202) and r.get_json()["successful_rows"] == len(EVENTS), r.get_json()
        yield project, client, auth, lines
        app.extensions["cartpulse"].db.dispose()


def _answer(client, auth, pipe, **params):
    query = "&".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in params.items())
    r = client.get(f"/v0/pipes/{pipe}.json?{query}", headers=auth)
    assert r.status_code == 200, r.get_json()
    rows = r.get_json()["data"]
    for row in rows:
        if "time_bin" in row:
            row["time_bin"] = row["time_bin"][:19].replace("T", " ")
    return rows


CASES = [("top_products", top_products, {}), ("top_products", top_products, {"limit": 3, "category": "hats"}),
         ("top_products", top_products, {"start": "2026-03-01 12:30:00", "end": "2026-03-03 06:15:00", "country": ["DE", "US"]}),
         ("events_by_country", events_by_country, {}),
         ("events_by_country", events_by_country, {"event_type": "purchase", "country": ["FR", "IT"]}),
         ("total_revenue", total_revenue, {}),
         ("total_revenue", total_revenue, {"start": "2026-03-02 00:00:00", "country": ["ES"]})]


@pytest.mark.parametrize("pipe, python, given", CASES)
def test_imported_seed_answers_as_python_and_as_the_seed(imported, pipe, python, given):
    _, client, auth, _ = imported
    params = {{"start": "start_date", "end": "end_date"}.get(k, k): v for k, v in given.items()}
    expected = python(**given)
    assert expected, "the generated events must give this case rows"
    assert _answer(client, auth, f"tb_{pipe}", **params) == expected
    assert _answer(client, auth, pipe, **params) == expected


def test_imported_parameters_are_declared_and_checked(imported):
    _, client, auth, _ = imported
    r = client.get("/v0/pipes/tb_top_products.json?limit=abc", headers=auth)
    assert r.status_code == 400 and "limit" in r.get_json()["error"]
    node = client.get("/v0/pipes/tb_top_products", headers=auth).get_json()["nodes"][0]
    assert {p["name"]: (p["type"], p["default"]) for p in node["params"]} == {
        "start_date": ("DateTime", None), "end_date": ("DateTime", None), "category": ("String", None),
        "country": ("Array(String)", None), "limit": ("Int64", 10)}


def test_reimport_changes_nothing_and_keeps_edits(imported):
    project, _, _, first = imported
    assert [line for line in first if line.startswith("wrote")] and not [line for line in first if "refused" in line]
    lines: list[str] = []
    assert tinybird_import.run(project, SEED, prefix="tb_", out=lines.append) == 0
    assert all(line.startswith(("unchanged", "made:")) for line in lines), lines
    edited = project / "models" / "tinybird" / "tb_total_revenue.sql"
    edited.write_text(edited.read_text() + "-- mine\n")
    lines.clear()
    assert tinybird_import.run(project, SEED, prefix="tb_", out=lines.append) == 1
    assert any("tb_total_revenue.sql: exists and was not written by this import, or was edited" in line for line in lines)
    assert edited.read_text().endswith("-- mine\n")


def test_clashes_and_refusals_are_one_line_each(tmp_path):
    project = copy_project(tmp_path)
    lines: list[str] = []
    assert tinybird_import.run(project, SEED, out=lines.append) == 1
    assert lines == ["refused: data source ecommerce_events: the project declares it already (import with --prefix)"]
    bad = tmp_path / "bad"
    shutil.copytree(SEED, bad)
    (bad / "datasources" / "ecommerce_events.datasource").write_text(
        (SEED / "datasources" / "ecommerce_events.datasource").read_text() + 'ENGINE_TTL "event_time + toIntervalDay(30)"\n')
    (bad / "endpoints" / "mat.pipe").write_text("NODE m\nSQL >\n    SELECT 1 AS x FROM x_events\n\nTYPE materialized\n")
    (bad / "endpoints" / "shape.pipe").write_text(
        "NODE e\nSQL >\n    %\n    SELECT {{columns(cols, 'country')}} FROM x_events\n\nTYPE endpoint\n")
    lines.clear()
    assert tinybird_import.run(project, bad, prefix="x_", out=lines.append) == 1
    refused = sorted(line for line in lines if line.startswith("refused"))
    assert refused[0].startswith("refused: datasources/ecommerce_events.datasource: -: ENGINE_TTL: not supported")
    assert "refused: endpoints/mat.pipe: node m: TYPE materialized: materialized pipes are not imported yet" in refused
    assert any(line.startswith("refused: endpoints/shape.pipe: node e: columns:") for line in refused), refused


def test_the_command_dry_run_writes_nothing(tmp_path):
    project = copy_project(tmp_path)
    out = subprocess.run([sys.executable, "-m", "cartpulse.cli.main", "tinybird", "import", str(SEED), "--dry-run",
                          "--prefix", "tb_"], capture_output=True, text=True, check=False, env={"CARTPULSE_PROJECT_DIR": str(project),
                          "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "would write models/tinybird/tb_top_products.sql" in out.stdout
    assert not (project / "models" / "tinybird").exists()
