"""CartPulse on a Citus cluster (a coordinator and at least two workers), docs/citus.md.

Runs when the tests' database is on a Citus coordinator: CARTPULSE_TEST_DATABASE_URL
pointing at one (README: "Testing on a Citus cluster"); skipped otherwise. The layout
is checked against the catalog, answers under concurrent ingest across the workers are
compared with Python, and a worker restarted during ingest loses nothing acknowledged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import re
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import expected
from cartpulse.project.datasources import for_settings
from cartpulse.storage import citus, worker_logins
from cartpulse.storage.schema import create_storage
from support import CARTPULSE, app_with, ndjson, truncate_events

BASE = datetime(2026, 11, 2, tzinfo=timezone.utc)
PIPES = {"top_products": expected.top_products, "events_by_country": expected.events_by_country,
         "total_revenue": expected.total_revenue}
#: A range with unaligned ends: its edges read the distributed events table, its middle
#: the rollups (macros/ranges.sql).
RANGE = {"start_date": "2026-11-02 07:31:00", "end_date": "2026-11-04 16:02:00"}


@pytest.fixture(scope="module", autouse=True)
def on_citus(engine):
    if engine != "citus":
        pytest.skip("needs a Citus coordinator: CARTPULSE_TEST_DATABASE_URL=<coordinator URL> (README)")


def batch(i: int, size: int) -> list[dict]:
    """Batch ``i``: its marker in user_id, products spread over every shard."""
    rng = random.Random(i)
    return [{"event_time": (BASE + timedelta(seconds=rng.randrange(4 * 86400))).strftime("%Y-%m-%d %H:%M:%S"),
             "event_type": rng.choice(["purchase", "purchase", "view"]), "user_id": f"b{i}",
             "product_id": f"p{rng.randrange(60)}", "category": "c", "price": round(rng.uniform(1, 100), 2),
             "quantity": rng.randint(1, 3), "session_id": f"s{i}", "country": rng.choice(["FR", "US", "DE", "JP"])}
            for _ in range(size)]


def assert_exact(http, events: list[dict]) -> None:
    for pipe, compute in PIPES.items():
        for params in ({}, RANGE):
            got = http.pipe(pipe, **params)
            assert expected.same(got, compute(events, **params)), (pipe, params, got[:5])


def stored_per_batch(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        citus.recover(conn)
        return dict(conn.execute("select user_id, count(*) from raw.ecommerce_events group by user_id").fetchall())


def test_layout_events_distributed_realtime_tables_on_the_coordinator(built):
    with psycopg.connect(built.database_url) as conn:
        assert conn.execute("select cartpulse.engine()").fetchone()[0] == "citus"
        distributed = dict(conn.execute(
            "select logicalrelid::regclass::text, column_to_column_name(logicalrelid, partkey)"
            " from pg_dist_partition where partmethod = 'h'").fetchall())
        assert distributed.get("raw.ecommerce_events") == "product_id"
        # Everything one snapshot must see together stays a plain table of the coordinator.
        local = ["raw.ecommerce_events_pending", "cartpulse.rollup_state", "cartpulse.idempotency_keys",
                 "cartpulse.rate_limits", "cartpulse.tokens"]
        local += [r for (r,) in conn.execute("select rollup from cartpulse.rollup_state")]
        citus_tables = {t for (t,) in conn.execute("select logicalrelid::regclass::text from pg_dist_partition")}
        assert len(local) > 5 and not citus_tables & set(local)
        # Shards on every worker: products hash to both.
        nodes = {p for (p,) in conn.execute(
            "select distinct n.nodeport from pg_dist_shard s join pg_dist_placement p using (shardid)"
            " join pg_dist_node n using (groupid) where s.logicalrelid = 'raw.ecommerce_events'::regclass")}
        assert len(nodes) >= 2 and len(nodes) == len(citus.workers(conn))


def test_concurrent_ingest_across_workers_is_exact(live_server, built):
    """Writers on every worker's shards, the absorber and readers at once: each no-range
    answer counts whole batches, at least those acknowledged before it; after the last
    acknowledgement every endpoint (rollups, pending rows and the events at range edges)
    equals Python's computation."""
    truncate_events(built.database_url)
    writers, size = 4, 25
    sent = {i: batch(i, size) for i in range(32)}
    acked, started, problems = set(), set(), []
    lock, done = threading.Lock(), threading.Event()

    def send(i: int) -> None:
        with lock:
            started.add(i)
        status, body = live_server.post_events(sent[i])
        assert status == 202 and body["successful_rows"] == size, (i, status, body)
        with lock:
            acked.add(i)

    def absorber():
        with psycopg.connect(built.database_url, autocommit=True) as conn:
            while not done.is_set():
                conn.execute("select cartpulse.absorb()")

    def reader():
        while not done.is_set():
            with lock:
                before = len(acked)
            total = sum(r["event_count"] for r in live_server.pipe("events_by_country"))
            with lock:
                after = len(started)
            if total % size or not before * size <= total <= after * size:
                problems.append(f"read {total} events with {before} batches acknowledged, {after} started")

    helpers = [threading.Thread(target=absorber), threading.Thread(target=reader)]
    for t in helpers:
        t.start()
    try:
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(send, sent))  # raises the first failed send
    finally:
        done.set()
        for t in helpers:
            t.join()
    assert not problems, problems[:5]
    events = [e for i in sorted(acked) for e in sent[i]]
    assert len(acked) == len(sent)
    assert stored_per_batch(built.database_url) == {f"b{i}": size for i in acked}
    assert_exact(live_server, events)
    assert len(workers_of(built.database_url, {e["product_id"] for e in events})) >= 2  # several workers


def workers_of(url: str, products: set[str]) -> set[int]:
    """The ports of the workers that hold these products' rows."""
    with psycopg.connect(url) as conn:
        return {conn.execute(
            "select n.nodeport from pg_dist_placement p join pg_dist_node n using (groupid)"
            " where p.shardid = get_shard_id_for_distribution_column('raw.ecommerce_events', %s::text)",
            [product]).fetchone()[0] for product in products}


def worker_restarter(url: str):
    """A function restarting (immediate mode: a crash) the first worker of ``url``'s
    cluster, when that worker runs on this machine and this user may run its pg_ctl."""
    with psycopg.connect(url) as conn:
        host, port = citus.workers(conn)[0]
    with psycopg.connect(make_conninfo(url, host=host, port=port), autocommit=True) as conn:
        data = Path(conn.execute("show data_directory").fetchone()[0])
        bindir = conn.execute("select setting from pg_config where name = 'BINDIR'").fetchone()[0]
        pid = int(conn.execute("select split_part(pg_read_file('postmaster.pid'), chr(10), 1)").fetchone()[0])
    try:
        log = os.readlink(f"/proc/{pid}/fd/1")  # where its server log goes, kept after the restart
        owner = data.stat().st_uid
    except OSError:
        pytest.skip(f"worker {host}:{port} does not run on this machine: cannot restart it")
    if os.geteuid() not in (0, owner):
        pytest.skip(f"restarting worker {host}:{port} needs root or its owner")
    command = [f"{bindir}/pg_ctl", "-D", str(data), "-l", log, "-m", "immediate", "-w", "restart"]
    if os.geteuid() != owner:
        import pwd
        command = ["su", pwd.getpwuid(owner).pw_name, "-c", " ".join(command)]

    def restart() -> None:
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    return restart


def test_a_worker_restarted_during_ingest_loses_nothing_acknowledged(live_server, built, app):
    """Writers keep sending while a worker crashes and comes back. A request may fail
    meanwhile; its client resends it with the same Idempotency-Key until acknowledged.
    Every batch is then stored exactly once, and every endpoint is exact."""
    restart = worker_restarter(built.database_url)
    truncate_events(built.database_url)
    writers, batches, size = 3, 12, 10
    sent = {i: batch(1000 + i, size) for i in range(writers * batches)}
    failures, problems = [], []
    halfway = threading.Event()

    def writer(w: int):
        for n, i in enumerate(range(w * batches, (w + 1) * batches)):
            key, deadline = str(uuid.uuid4()), time.monotonic() + 120
            while True:
                status, body = live_server.post_events(sent[i], headers={"Idempotency-Key": key})
                if status in (200, 202):
                    if body.get("successful_rows") != size:
                        problems.append(f"batch {i}: {body}")
                    break
                failures.append(status)
                if time.monotonic() > deadline:
                    problems.append(f"batch {i}: never acknowledged, last {status} {body}")
                    break
                time.sleep(0.2)
            if n == batches // 3:
                halfway.set()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    assert halfway.wait(120)
    restart()
    # The session's in-process app pools coordinator sessions whose cached links to the
    # worker broke: each would fail one statement (a 503; writes retry). Fresh ones for
    # the tests that follow.
    app.extensions["cartpulse"].db.dispose()
    for t in threads:
        t.join()
    assert not problems, problems[:5]
    assert all(status >= 500 for status in failures), failures  # only the outage: no 4xx
    assert stored_per_batch(built.database_url) == {f"b{1000 + i}": size for i in sent}
    assert_exact(live_server, [e for i in sorted(sent) for e in sent[i]])


def test_init_says_when_sessions_keep_fewer_connections_than_shards_per_worker(built, caplog):
    """As Citus comes, a session keeps one connection per worker, and each batch opens
    one per shard there (docs/citus.md, "Set-up"): cartpulse init says what to set."""
    source = for_settings(built)["ecommerce_events"]
    with psycopg.connect(built.database_url) as conn:
        per_worker = max(n for (n,) in conn.execute(
            "select count(*) from pg_dist_shard s join pg_dist_placement p using (shardid)"
            " where s.logicalrelid = 'raw.ecommerce_events'::regclass group by p.groupid"))
        assert per_worker > 1
        with caplog.at_level("WARNING", logger="cartpulse.storage.citus"):
            advice = citus.advise_cached_connections(conn, source)
        assert advice and f"set citus.max_cached_conns_per_worker = {per_worker}" in advice
        assert advice in caplog.text
        conn.execute(f"set citus.max_cached_conns_per_worker = {per_worker}")
        assert citus.advise_cached_connections(conn, source) is None


def test_the_query_api_reads_the_workers_and_its_wall_holds_there(client, auth, built):
    """The Query API on Citus: its answers include the rows on every worker, equal to
    Python's; what it may not read stays refused; and on the workers the role may read
    the events' shards and nothing else."""
    truncate_events(built.database_url)
    events = [e for i in range(4) for e in batch(2000 + i, 25)]
    r = client.post("/v0/events?name=ecommerce_events", data=ndjson(events), headers=auth)
    assert r.status_code == 202, r.get_json()
    q = "select product_id, count() n, sum(quantity) q from ecommerce_events group by product_id order by product_id"
    r = client.get("/v0/sql", query_string={"q": q}, headers=auth)
    assert r.status_code == 200, r.get_json()
    want = {}
    for e in events:
        n, q_ = want.get(e["product_id"], (0, 0))
        want[e["product_id"]] = (n + 1, q_ + e["quantity"])
    assert [(d["product_id"], d["n"], d["q"]) for d in r.get_json()["data"]] == [
        (p, n, q_) for p, (n, q_) in sorted(want.items())]  # in order: ORDER BY holds across shards
    assert len(workers_of(built.database_url, set(want))) >= 2  # the answer has rows of several workers
    for statement in ("select * from cartpulse.tokens", "select * from analytics.rollup_purchases_daily",
                      "select * from raw.ecommerce_events_pending", "select run_command_on_workers('select 1')"):
        r = client.get("/v0/sql", query_string={"q": statement}, headers=auth)
        assert r.status_code in (400, 403, 404), (statement, r.status_code, r.get_json())
    readable = re.compile(r"raw\.ecommerce_events(_\d+)?")
    with psycopg.connect(built.database_url) as conn:
        found = conn.execute(
            "select nodeport, success, result from run_command_on_workers($$"
            " select coalesce(string_agg(n.nspname || '.' || c.relname, ' '), '') from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p', 'v', 'm', 'f')"
            " and n.nspname not in ('pg_catalog', 'information_schema')"
            " and not exists (select from pg_depend d where d.objid = c.oid and d.deptype = 'e')"
            " and has_table_privilege('cartpulse_query', c.oid, 'select')$$)").fetchall()
    assert len(found) >= 2 and all(ok for _, ok, _ in found), found
    for port, _, relations in found:
        assert relations and all(readable.fullmatch(r) for r in relations.split()), (port, relations)


def scram_accepts(verifier: str, password: str) -> bool:
    """RFC 5802 over PostgreSQL's SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>."""
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored, server = keys.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return (method == "SCRAM-SHA-256" and base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored
            and base64.b64encode(hmac.new(salted, b"Server Key", hashlib.sha256).digest()).decode() == server)


def test_citus_holds_a_password_every_node_accepts_for_the_query_role_and_analysts(built):
    """What Citus needs to log in to the workers as the query role and as an analyst
    under password authentication (the test cluster trusts 127.0.0.1, so a working query
    proves nothing of it): a pg_dist_authinfo row for every node, whose password each
    node's SCRAM verifier of the role accepts; the analyst's is the one she was given.
    Only superusers read the row; the key it derives from never reaches a worker."""
    name = f"analyst_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": built.database_url, "CARTPULSE_STATE_DIR": str(built.state_dir)}
    made = subprocess.run([CARTPULSE, "analyst", "create", name], env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and "cannot read" not in made.stderr, made.stderr
    given = unquote(urlsplit(made.stdout.strip()).password)
    try:
        with psycopg.connect(built.database_url) as conn:
            held = dict(conn.execute("select rolename, authinfo from pg_dist_authinfo where nodeid = 0").fetchall())
            assert set(held) >= {"cartpulse_query", name}
            passwords = {role: held[role].removeprefix("password=") for role in ("cartpulse_query", name)}
            assert passwords[name] == given
            assert all(len(p) == 64 for p in passwords.values()) and passwords[name] != passwords["cartpulse_query"]
            for role, password in passwords.items():
                states = [conn.execute("select rolcanlogin, rolpassword from pg_authid where rolname = %s",
                                       [role]).fetchone()]
                states += [(r.split(" ", 1)[0] == "true", r.split(" ", 1)[1]) for (r,) in conn.execute(
                    "select result from run_command_on_workers(format("
                    "'select rolcanlogin || '' '' || rolpassword from pg_authid where rolname = %%L', %s::text))",
                    [role])]
                assert len(states) == 1 + len(citus.workers(conn))
                assert all(login and scram_accepts(verifier, password) for login, verifier in states), role
                assert not conn.execute("select has_table_privilege(%s, 'pg_dist_authinfo', 'select')",
                                        [role]).fetchone()[0]
            key = conn.execute("select rolcanlogin, rolpassword is not null from pg_authid where rolname = %s",
                               [worker_logins.KEY_ROLE]).fetchone()
            assert key == (False, True)
            assert {r for (r,) in conn.execute("select result from run_command_on_workers(format("
                                               "'select count(*) from pg_roles where rolname = %%L', %s::text))",
                                               [worker_logins.KEY_ROLE])} == {"0"}
    finally:
        subprocess.run([CARTPULSE, "analyst", "delete", name], env=env, capture_output=True, timeout=120)
    with psycopg.connect(built.database_url) as conn:
        assert conn.execute("select count(*) from pg_dist_authinfo where rolename = %s", [name]).fetchone()[0] == 0


def test_under_password_authentication_the_row_is_what_lets_citus_in(built, client, auth, tmp_path):
    """Where the workers ask for a password (skipped on a cluster that trusts this
    machine, as the shared test cluster does): without its pg_dist_authinfo row Citus
    cannot log in as the query role; `cartpulse init` (create_storage) writes it again."""
    with psycopg.connect(built.database_url) as conn:
        host, port = citus.workers(conn)[0]
    try:
        psycopg.connect(make_conninfo(built.database_url, host=host, port=port, user="cartpulse_query",
                                      password="", passfile=str(tmp_path / "none")), connect_timeout=10).close()
        pytest.skip("the workers trust this machine: they ask no password, so none is proven needed")
    except psycopg.OperationalError as err:
        if "password" not in str(err):
            raise

    def count() -> int | str:  # in a new session: Citus keeps a session's connections to the workers
        with psycopg.connect(built.database_url, autocommit=True) as conn:
            conn.execute("set role cartpulse_query")
            try:
                return conn.execute("select count(*) from raw.ecommerce_events").fetchone()[0]
            except psycopg.Error as err:  # a connection failure, as the worker's refusal comes
                return str(err)

    truncate_events(built.database_url)
    assert count() == 0
    with psycopg.connect(built.database_url, autocommit=True) as conn:
        conn.execute("delete from pg_dist_authinfo where rolename = 'cartpulse_query'")
    try:
        refused = count()
        assert "cartpulse_query@" in refused and "password" in refused, refused
        # The Query API says what to run (its pooled sessions may hold connections made
        # before: a fresh app's session has none).
        with app_with(built) as fresh, fresh.test_client() as c:
            r = c.get("/v0/sql", query_string={"q": "select count() from ecommerce_events"}, headers=auth)
        assert r.status_code == 503 and "cartpulse init" in r.get_json()["error"], r.get_json()
    finally:
        create_storage(built.database_url, built)
    assert count() == 0
