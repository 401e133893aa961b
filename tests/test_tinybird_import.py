"""`cartpulse tinybird import`: the seed's own Tinybird datafiles (tests/fixtures/tinybird/seed)
imported into a copy of the project, built with dbt, served, and answered exactly as
Python computes them on generated events and as CartPulse's own endpoints answer."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cartpulse.cli import tinybird_import, tinybird_tests
from support import built_copy, copy_project, ndjson

SEED = Path(__file__).parent / "fixtures" / "tinybird" / "seed"
#: A materialized pipe (-State into an AggregatingMergeTree) and two endpoints over its
#: target (-Merge), reading the project's own ecommerce_events.
MATERIALIZED = SEED.parent / "materialized"
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


def _ndjson_rows(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def with_tests(folder: Path) -> Path:
    """The seed's datafiles and a tests/top_products.yaml as `tb test create` writes one,
    its expectations computed in Python from EVENTS: three that hold and one that must fail."""
    copy = folder / "seed_with_tests"
    shutil.copytree(SEED, copy)
    (copy / "tests").mkdir()
    tests = [{"name": "hats_top_3", "description": "Three best hats", "parameters": "category=hats&limit=3",
              "expected_result": _ndjson_rows(top_products(limit=3, category="hats")), "expected_http_status": 200},
             {"name": "two_countries", "parameters": "country=DE&country=US&start_date=2026-03-02 00:00:00",
              "expected_result": _ndjson_rows(top_products(country=["DE", "US"], start="2026-03-02 00:00:00"))},
             {"name": "bad_limit", "parameters": "limit=abc", "expected_result": "", "expected_http_status": 400},
             {"name": "wrong_on_purpose", "parameters": "limit=2", "expected_result": _ndjson_rows(top_products(limit=3))}]
    (copy / "tests" / "top_products.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    # A data source whose rows are only the project's fixtures, as `tb test` loads them.
    (copy / "datasources" / "visits.datasource").write_text(
        "SCHEMA >\n    `visit_time` DateTime `json:$.visit_time`,\n    `page` String `json:$.page`\n\nENGINE \"MergeTree\"\n")
    (copy / "endpoints" / "visits_by_page.pipe").write_text(
        "NODE endpoint\nSQL >\n    SELECT page, count() AS visits FROM visits GROUP BY page ORDER BY visits DESC, page\n\n"
        "TYPE endpoint\n")
    (copy / "fixtures").mkdir()
    (copy / "fixtures" / "visits.ndjson").write_text("".join(
        json.dumps({"visit_time": f"2026-03-01 10:0{i}:00", "page": page}) + "\n" for i, page in enumerate(["/a", "/b", "/a"])))
    (copy / "tests" / "visits_by_page.yaml").write_text(yaml.safe_dump([{
        "name": "pages", "parameters": "", "expected_result": '{"page": "/a", "visits": 2}\n{"page": "/b", "visits": 1}\n'}]))
    return copy


@pytest.fixture(scope="module")
def imported(built, server_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tinybird")
    project = copy_project(folder)
    lines: list[str] = []
    assert tinybird_import.run(project, SEED, prefix="tb_", out=lines.append) == 0, lines
    assert tinybird_import.run(project, MATERIALIZED, out=lines.append) == 0, lines
    assert tinybird_import.run(project, with_tests(folder), prefix="tb_", out=lines.append) == 0, lines
    from cartpulse.app import create_app

    with built_copy(built, server_url, project, folder, "cartpulse_tb") as settings:
        app = create_app(settings)
        client = app.test_client()
        auth = {"Authorization": f"Bearer {settings.admin_token}"}
        for source in ("ecommerce_events", "tb_ecommerce_events"):
            r = client.post(f"/v0/events?name={source}", data=ndjson(EVENTS), headers=auth)
            assert r.status_code in (200, 202) and r.get_json()["successful_rows"] == len(EVENTS), r.get_json()
        yield project, client, auth, lines
        app.extensions["cartpulse_stats"].flush()  # while its database exists (see conftest's app)
        app.extensions["cartpulse"].db.dispose()


def _answer(client, auth, pipe, **params):
    query = "&".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in params.items())
    r = client.get(f"/v0/pipes/{pipe}.json?{query}", headers=auth)
    assert r.status_code == 200, r.get_json()
    rows = r.get_json()["data"]
    for row in rows:
        for key in ("time_bin", "bin"):
            if key in row:
                row[key] = row[key][:19].replace("T", " ")
    return rows


def _bin(e) -> str:
    t = datetime.strptime(e["event_time"], "%Y-%m-%d %H:%M:%S")
    return t.replace(minute=t.minute - t.minute % 15, second=0).strftime("%Y-%m-%d %H:%M:%S")


def sales_over_time(country=None):
    bins = defaultdict(lambda: [0, 0, 0.0])
    for e in EVENTS:
        if e["event_type"] == "purchase" and _in(e, country=country):
            row = bins[_bin(e)]
            row[0], row[1], row[2] = row[0] + 1, row[1] + e["quantity"], row[2] + e["price"] * e["quantity"]
    return [{"bin": b, "purchases": n, "units": u, "revenue": r} for b, (n, u, r) in sorted(bins.items())]


def product_sales(start=None, end=None, limit=10):
    found = defaultdict(list)
    for e in EVENTS:
        if e["event_type"] == "purchase" and (start is None or _bin(e) >= start) and (end is None or _bin(e) < end):
            found[e["product_id"]].append(e)
    rows = [{"product_id": p, "purchases": len(es), "avg_price": sum(e["price"] for e in es) / len(es),
             "top_price": max(e["price"] for e in es), "buyers": len({e["user_id"] for e in es})} for p, es in found.items()]
    return sorted(rows, key=lambda r: (-r["purchases"], r["product_id"]))[:limit]


CASES = [("top_products", top_products, {}), ("top_products", top_products, {"limit": 3, "category": "hats"}),
         ("top_products", top_products, {"start": "2026-03-01 12:30:00", "end": "2026-03-03 06:15:00", "country": ["DE", "US"]}),
         ("events_by_country", events_by_country, {}),
         ("events_by_country", events_by_country, {"event_type": "purchase", "country": ["FR", "IT"]}),
         ("total_revenue", total_revenue, {}),
         ("total_revenue", total_revenue, {"start": "2026-03-02 00:00:00", "country": ["ES"]})]
MATERIALIZED_CASES = [("sales_over_time", sales_over_time, {}), ("sales_over_time", sales_over_time, {"country": ["DE", "IT"]}),
                      ("product_sales", product_sales, {}),
                      ("product_sales", product_sales, {"start": "2026-03-01 10:07:00", "end": "2026-03-02 20:00:00", "limit": 4})]


def _case(python, given: dict) -> tuple[dict, list[dict]]:
    """The request's parameters (Python's start/end are the pipes' start_date/end_date)
    and the rows Python expects, which must not be none."""
    expected = python(**given)
    assert expected, "the generated events must give this case rows"
    return {{"start": "start_date", "end": "end_date"}.get(k, k): v for k, v in given.items()}, expected


@pytest.mark.parametrize("pipe, python, given", CASES)
def test_imported_seed_answers_as_python_and_as_the_seed(imported, pipe, python, given):
    _, client, auth, _ = imported
    params, expected = _case(python, given)
    assert _answer(client, auth, f"tb_{pipe}", **params) == expected
    assert _answer(client, auth, pipe, **params) == expected


@pytest.mark.parametrize("pipe", ["tb_top_products", "tb_events_by_country", "tb_total_revenue"])
def test_the_imported_seed_endpoints_are_derived(imported, pipe):
    """Over the imported data source (its staging model's pending twin is imported too),
    through top_products' intermediate node (a WITH query) and the typed parameters' casts."""
    _, client, auth, _ = imported
    said = client.get(f"/v0/pipes/{pipe}", headers=auth).get_json()["derivation"]
    assert said["derivable"] is True and said["answered_from"] == "derived", said
    assert all(r["data_source"] == "tb_ecommerce_events" for r in said["rollups"]), said


@pytest.mark.parametrize("pipe, python, given", MATERIALIZED_CASES)
def test_endpoints_over_a_materialized_pipe_answer_as_python(imported, pipe, python, given):
    _, client, auth, _ = imported
    params, expected = _case(python, given)
    answered = _answer(client, auth, pipe, **params)
    for row in answered + expected:
        if "avg_price" in row:
            row["avg_price"] = round(row["avg_price"], 9)
    assert answered == expected


def test_an_endpoint_over_a_materialized_pipe_is_derived(imported):
    _, client, auth, lines = imported
    assert "made: materializations/sales_by_bin.pipe: materialized pipe into sales_by_bin_mv: an endpoint reading " \
           "sales_by_bin_mv aggregates ecommerce_events itself (-State/-Merge as plain aggregates)" in lines
    said = client.get("/v0/pipes/sales_over_time", headers=auth).get_json()["derivation"]
    assert said["derivable"] is True and said["answered_from"] == "derived", said
    # A range on the target's bucket column (not on event_time) and count(distinct): exact, scanning.
    said = client.get("/v0/pipes/product_sales", headers=auth).get_json()["derivation"]
    assert said["derivable"] is False, said


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
    assert "refused: endpoints/mat.pipe: node m: DATASOURCE: a materialized node names its target" in refused
    assert any(line.startswith("refused: endpoints/shape.pipe: node e: columns:") for line in refused), refused


def test_the_command_dry_run_writes_nothing(tmp_path):
    project = copy_project(tmp_path)
    out = subprocess.run([sys.executable, "-m", "cartpulse.cli.main", "tinybird", "import", str(SEED), "--dry-run",
                          "--prefix", "tb_"], capture_output=True, text=True, check=False, env={"CARTPULSE_PROJECT_DIR": str(project),
                          "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "would write models/tinybird/tb_top_products.sql" in out.stdout
    assert not (project / "models" / "tinybird").exists()


def _materialized_variant(tmp_path, state: str, read: str) -> list[str]:
    folder = tmp_path / "mv"
    shutil.copytree(MATERIALIZED, folder)
    mv = folder / "materializations" / "sales_by_bin.pipe"
    mv.write_text(mv.read_text().replace("uniqExactState(user_id) AS buyers", state))
    (folder / "endpoints" / "product_sales.pipe").unlink()
    (folder / "endpoints" / "reader.pipe").write_text(f"NODE reader\nSQL >\n    {read}\n\nTYPE endpoint\n")
    _, _, refused = tinybird_import.plan(folder, "", tinybird_import.project_sources(copy_project(tmp_path)))
    return refused


@pytest.mark.parametrize("state, read, says", [
    ("uniqState(user_id) AS buyers", "SELECT 1 AS x FROM sales_by_bin_mv",
     "refused: materializations/sales_by_bin.pipe: node sales_by_bin_state: uniqState: an estimate in ClickHouse"),
    ("quantilesState(0.5)(price) AS buyers", "SELECT 1 AS x FROM sales_by_bin_mv",
     "refused: materializations/sales_by_bin.pipe: node sales_by_bin_state: quantilesState: an estimate in ClickHouse"),
    ("argMaxState(price, event_time) AS buyers", "SELECT 1 AS x FROM sales_by_bin_mv",
     "refused: materializations/sales_by_bin.pipe: node sales_by_bin_state: argMaxState: no exact plain aggregate"),
    ("uniqExactState(user_id) AS buyers", "SELECT product_id FROM sales_by_bin_mv",
     "refused: endpoints/reader.pipe: node reader: sales_by_bin_mv: read without -Merge: its rows are partial aggregates"),
    ("uniqExactState(user_id) AS buyers", "SELECT product_id, sumMerge(purchases) AS n FROM sales_by_bin_mv GROUP BY product_id",
     ("refused: endpoints/reader.pipe: node reader: sumMerge(purchases): purchases is countState() in sales_by_bin_state: "
      "read it as countMerge(purchases)")),
    ("uniqExactState(user_id) AS buyers", "SELECT session_id, countMerge(purchases) AS n FROM sales_by_bin_mv GROUP BY 1",
     "refused: endpoints/reader.pipe: node reader: session_id: not a column of sales_by_bin_mv"),
    ("uniqExactState(user_id) AS buyers", ("SELECT country, countMerge(purchases) AS n, count() AS rows FROM sales_by_bin_mv "
                                           "GROUP BY country"), "refused: endpoints/reader.pipe: node reader: count(): over sales_by_bin_mv's rows, which are partial"),
])
def test_materialized_constructs_without_an_exact_plain_form_are_refused_by_name(tmp_path, state, read, says):
    refused = _materialized_variant(tmp_path, state, read)
    assert any(line.startswith(says) for line in refused), refused


def test_imported_tb_tests_run_and_can_fail(imported, capsys):
    project, client, auth, lines = imported
    assert "made: tests/top_products.yaml: 4 tests of tb_top_products (tinybird_tests/tb_top_products.yaml: " \
           "cartpulse tinybird test)" in lines
    assert "made: fixtures/visits.ndjson: fixture of tb_visits (tinybird_tests/fixtures/: cartpulse tinybird test --fixtures)" \
           in lines
    # `cartpulse tinybird test --fixtures`: the fixtures appended, then every test run.
    capsys.readouterr()
    settings = client.application.extensions["cartpulse"].settings
    assert tinybird_tests.cmd_test(settings, argparse.Namespace(fixtures=True)) == 1
    said = capsys.readouterr().out.splitlines()
    assert said == ["loaded 3 rows into tb_visits from tinybird_tests/fixtures/tb_visits.ndjson",
                    "passed tb_top_products: hats_top_3", "passed tb_top_products: two_countries",
                    "passed tb_top_products: bad_limit", "FAILED tb_top_products: wrong_on_purpose: 2 rows, expected 3",
                    "passed tb_visits_by_page: pages", "4 passed, 1 failed"]
    again: list[str] = []
    assert tinybird_tests.run(client, auth, project / tinybird_tests.TESTS, out=again.append) == 1
    assert again == said[1:]


@pytest.mark.parametrize("test, says", [
    ({"name": "t", "parameters": "colour=red"}, "test t: parameter colour: the pipe tb_top_products declares no such parameter"),
    ({"name": "t", "expected_result": "not json"}, "test t: expected_result: a line that is not JSON"),
    ({"name": "t", "pipe": "x"}, "test t: pipe: not a field of a Tinybird test"),
    ({"parameters": "limit=1"}, "test -: name: each test has one"),
])
def test_tb_tests_that_do_not_map_are_refused_by_name(tmp_path, test, says):
    folder = tmp_path / "tb"
    shutil.copytree(SEED, folder)
    (folder / "tests").mkdir()
    (folder / "tests" / "top_products.yaml").write_text(yaml.safe_dump([test]))
    (folder / "tests" / "nowhere.yaml").write_text("[]")
    _, _, refused = tinybird_import.plan(folder, "tb_")
    assert refused[0] == "refused: tests/nowhere.yaml: -: tests of nowhere, a pipe this import did not make (refused, or none)"
    assert len(refused) == 2 and refused[1].startswith(f"refused: tests/top_products.yaml: {says}"), refused


def test_a_targets_keys_alone_read_as_the_sources(tmp_path):
    folder = tmp_path / "keys"
    shutil.copytree(MATERIALIZED, folder)
    (folder / "endpoints" / "countries.pipe").write_text(
        "NODE e\nSQL >\n    SELECT country, max(bin) AS latest FROM sales_by_bin_mv GROUP BY country ORDER BY country\n")
    files, _, refused = tinybird_import.plan(folder, "", tinybird_import.project_sources(copy_project(tmp_path)))
    assert not refused, refused
    assert "AS latest FROM {{ ref('stg_raw__ecommerce_events') }} AS ecommerce_events WHERE event_type = 'purchase' " \
           "GROUP BY country ORDER BY country" in files[tinybird_import.FOLDER / "countries.sql"]


def test_a_summing_target_read_with_sum_is_the_plain_aggregate(tmp_path):
    folder = tmp_path / "summing"
    (folder / "pipes").mkdir(parents=True)
    (folder / "pipes" / "mv.pipe").write_text(
        "NODE m\nSQL >\n    SELECT toDate(event_time) AS day, country, count() AS n, sum(quantity) AS units, max(price) AS top\n"
        "    FROM ecommerce_events GROUP BY day, country ORDER BY day\n\nTYPE materialized\nDATASOURCE daily\n"
        'ENGINE "SummingMergeTree"\n')
    (folder / "pipes" / "daily_units.pipe").write_text(
        "NODE e\nSQL >\n    SELECT day, sum(n) AS events, sum(units) AS units, max(top) AS top FROM daily GROUP BY day\n")
    files, _, refused = tinybird_import.plan(folder, "", tinybird_import.project_sources(copy_project(tmp_path)))
    assert not refused, refused
    sql = files[tinybird_import.FOLDER / "daily_units.sql"]
    assert "CAST(COUNT(*) AS BIGINT) AS events, CAST(SUM(quantity) AS BIGINT) AS units, CAST(MAX(price) AS DOUBLE PRECISION)" \
           " AS top FROM {{ ref('stg_raw__ecommerce_events') }}" in sql, sql
    assert "GROUP BY CAST(event_time AS DATE)" in sql, sql
