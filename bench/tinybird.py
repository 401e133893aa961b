"""`make bench-tinybird`: the README's Tinybird project ("Coming from Tinybird": the seed's
own datafiles) imported and served at EVENTS events (default 1,000,000), in one run.

A Tinybird user brings a folder, not an endpoint written for CartPulse, so this measures
what `cartpulse tinybird import` makes of the seed's datafiles with nothing added: the
three pipes (tb_top_products through its intermediate node, tb_events_by_country,
tb_total_revenue) over the imported data source tb_ecommerce_events, derived (issue #24)
as any endpoint is. EVENTS events are posted over the Events API to the imported data
source, then each endpoint is read with no parameters and with a 7-day range, with
``Cache-Control: no-cache`` (so every figure is the query, not the answer cache), at
concurrency 1, REQUESTS rounds interleaved:

1. after a refresh (`dbt run` after the load, then `VACUUM ANALYZE` as the absorber does);
2. while 1,000 events/s arrive as 100 POSTs/s of 10 events (writes.py), the absorber running;

beside the same SQL served as written (the endpoint's own function, scanning the events,
in the database: median of 5). Writes bench/tinybird.md (TINYBIRD_OUT).

Environment: EVENTS, REQUESTS (100), CLIENTS/BATCH (ingest, as bench.py), DATABASE_URL
(else a fresh embedded server under .cartpulse/bench-tinybird).
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ["BENCH_DATASOURCE"] = "tb_ecommerce_events"  # before bench's Client reads it (the writer inherits it)

import bench  # noqa: E402
import psycopg  # noqa: E402
import reads  # noqa: E402
import writes  # noqa: E402
from bench import HERE, WEEK, Client, ingest, make_data, serve, service_env, sql_median  # noqa: E402

from cartpulse.cli import tinybird_import  # noqa: E402
from cartpulse.ops.dbt_runner import run_dbt  # noqa: E402

EVENTS = int(os.environ.get("EVENTS", 1_000_000))
REQUESTS = int(os.environ.get("REQUESTS", 100))
WORK = bench.PROJECT_DIR / ".cartpulse" / "bench-tinybird"
SEED = bench.PROJECT_DIR / "tests" / "fixtures" / "tinybird" / "seed"
PIPES = ("tb_top_products", "tb_events_by_country", "tb_total_revenue")
CELLS = [(pipe, label, params) for pipe in PIPES for label, params in (("no params", {}), ("7-day range", WEEK))]
PORT = int(os.environ.get("BENCH_PORT", 8791))


def project_with_import(work: Path) -> Path:
    """The bench's project copy (bench.project_copy) with the seed's datafiles imported, as
    the README's "Coming from Tinybird" does."""
    project = bench.project_copy(work)
    said: list[str] = []
    if tinybird_import.run(project, SEED, prefix="tb_", out=said.append) != 0:
        raise RuntimeError("import failed:\n" + "\n".join(said))
    return project


def in_db_ms(url: str, function: str, params: dict) -> float:
    """An endpoint's SQL function called in the database, median ms of 5: ``<pipe>`` is its
    SQL as written (scanning the events), ``<pipe>__derived`` the answer from its rollups."""
    args = ", ".join(f"{k} => %({k})s::timestamptz" for k in params)
    given = {k: datetime.fromisoformat(v).replace(tzinfo=timezone.utc) for k, v in params.items()}
    # The session the service's pool opens (storage/db.py): UTC, no parallel workers; the
    # warm-up plans the function's queries.
    return sql_median(url, f"select * from analytics.{function}({args})", given,
                      options="-c TimeZone=UTC -c max_parallel_workers_per_gather=0") * 1000


def table(title: str, query: dict, in_db: dict) -> list[str]:
    lines = [f"### {title}", "",
             "| endpoint | parameters | p50 ms | p99 ms | in the database: derived ms | as written (scanning) ms | ratio |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for pipe, label, _ in CELLS:
        cell, derived, written = query[(pipe, label)], in_db[(pipe, label, "derived")], in_db[(pipe, label, "written")]
        lines.append(f"| {pipe} | {label} | {cell.p(50):.2f} | {cell.p(99):.2f} | {derived:.2f} | {written:.2f} | "
                     f"{written / derived:.1f}× |")
    return lines + [""]


def main() -> int:
    for folder in (WORK, bench.WORK):  # its own state; the events files are bench.py's (reused across runs)
        folder.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    files = make_data(EVENTS)
    server, url, token, settings, engine = bench.prepare(WORK, project=project_with_import(WORK))
    try:
        proc = serve(WORK, PORT, url, settings, token)
        try:
            client = Client(PORT, token)
            derivations = {}
            for pipe in PIPES:
                said = client.metadata(pipe)["derivation"]
                derivations[pipe] = ("derived: " + ", ".join(r["name"] for r in said["rollups"])
                                     if said["answered_from"] == "derived" else f"as written: {said['reason']}")
                print(f"{pipe}: {derivations[pipe]}", flush=True)
            seconds = ingest(PORT, token, files)
            print(f"ingest into tb_ecommerce_events: {EVENTS / seconds:,.0f} events/s", flush=True)
            run_dbt(settings, url, "run", "--quiet", capture=True)
            with psycopg.connect(url, autocommit=True) as conn:  # as bench.py's refresh: the absorber's vacuum, done
                conn.execute("vacuum analyze")
            in_db = {(pipe, label, kind): in_db_ms(url, pipe + suffix, params) for pipe, label, params in CELLS
                     for kind, suffix in (("derived", "__derived"), ("written", ""))}
            _, refreshed = reads.latency(PORT, token, REQUESTS, CELLS)
            env = service_env(PORT, url, settings, token)
            _, streaming, stream = writes.under_writes(PORT, token, REQUESTS, url, env, WORK / "scheduler.log", CELLS)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        if server is not None:
            server.stop()
    lines = ["# The README's Tinybird project, imported (`make bench-tinybird`)", "",
             f"The seed's own datafiles (`tests/fixtures/tinybird/seed/`) imported with `cartpulse tinybird import "
             f"--prefix tb_`, nothing else added; {EVENTS:,} events posted to `tb_ecommerce_events` over the Events API; "
             f"{engine}; {REQUESTS} rounds per cell at concurrency 1, interleaved, every read with "
             "`Cache-Control: no-cache` (the query's cost, never the answer cache), p50 and p99 over HTTP. "
             "In the database, after the refresh (median of 5, in a session set as the service's pool sets its own: "
             "UTC, no parallel workers): the derived answer's function, and the endpoint's own "
             "function, its SQL as written scanning the events (what an endpoint outside the derivable class costs); "
             "the ratio is the second over the first. "
             f"Load average before the run: {load_before[0]:.2f}. `bench/tinybird.py` wrote this file; "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", ""]
    lines += ["How each endpoint is answered (`GET /v0/pipes/<name>`):", ""]
    lines += [f"- {pipe}: {derivations[pipe]}" for pipe in PIPES] + [""]
    lines += table("After a refresh", refreshed, in_db)
    lines += table(f"While writes stream in ({stream.describe()})", streaming, in_db)
    lines += ["### Where a read's time goes (after a refresh, median ms per phase, from Server-Timing)", "",
              "| endpoint | parameters | " + " | ".join(reads.PHASES) + " | http | client |",
              "|---|---|" + "---:|" * (len(reads.PHASES) + 2)]
    for (pipe, label), cell in refreshed.items():
        phases = cell.breakdown()
        lines.append(f"| {pipe} | {label} | " + " | ".join(f"{phases[p]:.2f}" for p in (*reads.PHASES, "http", "client"))
                     + " |")
    lines.append("")
    median = statistics.median(c.p(50) for c in streaming.values())
    lines += [f"Median of the cells' p50 while writing: {median:.2f} ms.", ""]
    out = Path(os.environ.get("TINYBIRD_OUT", HERE / "tinybird.md"))
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"bench-tinybird: {time.perf_counter() - started:.0f}s", flush=True)
    raise SystemExit(code)
