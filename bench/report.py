"""The results file of `make bench`: issue #12's table, from one run's figures (``Run``).

Every target is checked against this run's own figures, and the paragraph on what bounds
the misses is written from them too (the phase that dominates a slow read, CPU per read
at concurrency 8, where the absorber's CPU goes), so that it cannot go stale."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone

import psutil
from reads import CELLS, PHASES

from bench import (
    MINUTE_RATE,
    REQUESTS,
    THROUGHPUT_SECONDS,
    WEB_THREADS,
    WEB_WORKERS,
    WEEK,
    percentile,
)
from cartpulse.config import Settings

MOMENTS = ("after a refresh", "after a refresh, no cache", "after a bulk load", "after a bulk load, no cache",
           "while the absorber runs")
#: The moments measured by ``reads.latency`` (the absorber's window has its own reads).
MEASURED = MOMENTS[:4]


@dataclass
class Run:
    events: int
    load_before: tuple
    engine: str = "?"
    embedded: bool = True
    ingest_s: float = 0.0
    ingest_bytes: int = 0
    copy_s: float = 0.0
    first_dbt: tuple = (0.0, 0.0)
    latency: dict = field(default_factory=dict)  # moment → {(pipe, label): reads.Cell}
    naive: dict = field(default_factory=dict)  # moment → {(pipe, ranged): ms}
    mix: object = None
    mix_cpu: dict = field(default_factory=dict)  # {"api": s, "database": s} over the mix
    mix_query: object = None  # the same mix with Cache-Control: no-cache
    mix_query_cpu: dict = field(default_factory=dict)
    windows: object = None
    duck: dict = field(default_factory=dict)
    duck_version: str | None = None
    fresh: tuple = (0.0, 0)
    bulk: tuple = (0.0, 0)
    pending_after_bulk: int = 0
    dead_after_bulk: dict = field(default_factory=dict)
    minute_events: int = 0
    minute_absorb: tuple = (0.0, 0)
    idle_absorb: dict = field(default_factory=dict)
    idle_runs: int = 0
    idle_dbt: tuple = (0.0, 0.0)
    window: object = None
    backfill: tuple = (0, 0.0, 0.0)
    full_refresh: tuple = (0.0, 0.0)
    memory: dict = field(default_factory=dict)
    load_after: tuple = ()


def dead(run: Run) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in sorted(run.dead_after_bulk.items())) or "none"


def times(ratio: float) -> str:
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def bracket(w) -> str:
    """Met, missed, or undecided between the window's lower and upper bound."""
    low, high = w.total / w.seconds, w.upper / w.seconds
    return yes(True) if high <= 0.10 else "no" if low > 0.10 else "between the bounds"


def yes(ok: bool) -> str:
    return "**yes**" if ok else "no"


def _cells(run: Run, moment: str) -> dict:
    """(pipe, label) → (p50, p99) at ``moment``."""
    if moment == "while the absorber runs":
        return {key: (percentile(ms, 50), percentile(ms, 99)) for key, ms in run.window.reads.items()}
    return {key: (cell.p(50), cell.p(99)) for key, cell in run.latency[moment].items()}


def _sql(run: Run, moment: str) -> dict:
    # During the absorber window the raw table has the bulk load's rows and a little more:
    # the plain SQL measured after the bulk load is the nearest (and a shade faster).
    return run.naive["after a bulk load" if moment == "while the absorber runs" else moment.split(",")[0]]


def _kept(run: Run, moment: str, key) -> str:
    """How many answers of the cell the result cache gave."""
    cell = run.latency.get(moment, {}).get(key)
    return f"{cell.hits}/{len(cell.ms)}" if cell is not None else "—"


def latency_section(run: Run) -> list[str]:
    lines = ["## 1. Latency at concurrency 1 (ms, over HTTP)", "",
             f"One keep-alive connection; the six cells interleaved, {REQUESTS} rounds per moment, nothing discarded"
             f" (the first answers after the bulk load count). 7-day range: `start_date={WEEK['start_date']}`,"
             f" `end_date={WEEK['end_date']}`. Plain SQL: the seed's query on the raw table by psycopg over a unix"
             " socket at the same moment (median of 5 after a warm-up; parallel workers allowed); × = plain SQL /"
             " endpoint p50. *After a refresh*: the first `dbt run` after the ingest below, then VACUUM ANALYZE."
             " *After a bulk load*: right after"
             f" {run.bulk[1]:,} more events came in through bulk imports (`POST /v0/datasources`), no refresh in"
             f" between ({run.pending_after_bulk:,} rows pending when the first read started; dead row versions not yet"
             f" vacuumed, from PostgreSQL's statistics: {dead(run)}). *While the absorber runs*:"
             f" `cartpulse scheduler` running, {MINUTE_RATE:,} events/s arriving, one"
             " round of the six reads every ~0.1 s for the whole window (SQL column: the figure after the bulk load)."
             " *No cache*: each request sent again right after its twin with `Cache-Control: no-cache`, so the"
             " endpoint's SQL runs every time (what a request the result cache has not seen costs); the other rows"
             " are the requests as a client sends them, where a repeat is answered from the worker's result cache"
             " until the data changes (kept: answers the cache gave).",
             "", "| moment | endpoint | parameters | p50 | p99 | kept | plain SQL | × | p50 ≤ 5 | p99 ≤ 20 | ≥ 10× |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for moment in MOMENTS:
        cells, sql = _cells(run, moment), _sql(run, moment)
        for pipe, label, _ in CELLS:
            p50, p99 = cells[(pipe, label)]
            ms = sql[(pipe, label == "7-day range")]
            lines.append(f"| {moment} | {pipe} | {label} | {p50:.1f} | {p99:.1f} | {_kept(run, moment, (pipe, label))} |"
                         f" {ms:.1f} | {times(ms / p50)} |"
                         f" {yes(p50 <= 5)} | {yes(p99 <= 20)} | {yes(ms / p50 >= 10)} |")
    return lines + [""]


def breakdown_section(run: Run) -> list[str]:
    lines = ["## 6. One read, broken into its parts (median ms)", "",
             "From each answer's `Server-Timing` header (the latency rows above): auth (token), rate limit,"
             " query (the endpoint's SQL), statistics (the answer's `statistics` and pipe_stats), render (JSON);"
             " app = the whole request inside the app; HTTP = client latency − app (the front, sockets, the"
             " client). Each column is its own median, so they need not add up.", "",
             "| moment | endpoint | parameters | client | HTTP | " + " | ".join(PHASES) + " |",
             "|---|---|---|---|---|" + "---|" * len(PHASES)]
    for moment in MEASURED:
        for (pipe, label), cell in run.latency[moment].items():
            b = cell.breakdown()
            lines.append(f"| {moment} | {pipe} | {label} | {b['client']:.2f} | {b['http']:.2f} | "
                         + " | ".join(f"{b[name]:.2f}" for name in PHASES) + " |")
    return lines + [""]


def throughput_section(run: Run) -> list[str]:
    cpu = run.mix_cpu
    per_read = {k: v / run.mix.requests * 1000 for k, v in cpu.items()}
    per_query = {k: v / run.mix_query.requests * 1000 for k, v in run.mix_query_cpu.items()}
    return ["## 2. Throughput at concurrency 8", "",
            f"8 clients, each its own keep-alive connection, for {THROUGHPUT_SECONDS:g} s each. Random windows: a"
            " random endpoint and a 7-day window starting at a random second of the 30 days (no window twice).", "",
            "| load | requests/s | p50 (ms) | p99 (ms) | ≥ target req/s | p99 ≤ 50 |", "|---|---|---|---|---|---|",
            f"| the 6-query mix | {run.mix.rate:,.0f} | {percentile(run.mix.ms, 50):.1f} |"
            f" {percentile(run.mix.ms, 99):.1f} | {yes(run.mix.rate >= 500)} (500) | {yes(percentile(run.mix.ms, 99) <= 50)} |",
            f"| the 6-query mix, `Cache-Control: no-cache` | {run.mix_query.rate:,.0f} | {percentile(run.mix_query.ms, 50):.1f} |"
            f" {percentile(run.mix_query.ms, 99):.1f} | {yes(run.mix_query.rate >= 500)} (500) |"
            f" {yes(percentile(run.mix_query.ms, 99) <= 50)} |",
            f"| random 7-day windows | {run.windows.rate:,.0f} | {percentile(run.windows.ms, 50):.1f} |"
            f" {percentile(run.windows.ms, 99):.1f} | {yes(run.windows.rate >= 200)} (200) | — |", "",
            f"CPU per read during the mix: API {per_read.get('api', 0):.2f} ms, database {per_read.get('database', 0):.2f} ms;"
            f" without the cache: API {per_query.get('api', 0):.2f} ms, database {per_query.get('database', 0):.2f} ms"
            " (CPU seconds of each process tree / requests).", ""]


def refresh_section(run: Run) -> list[str]:
    w, idle = run.window, run.idle_absorb
    cfg = Settings.from_env()  # what the scheduler ran with: the defaults, unless the bench's environment says
    idle_total = idle["service"] + idle["database"]
    absorber_only = w.scheduler_own + w.backends.get("cartpulse-absorber", 0.0)
    backends = ", ".join(f"{name} {s:.2f}" for name, s in sorted(w.backends.items())) or "none seen"
    return ["## 3. Refresh cost", "",
            "| measure | value | target | met? |", "|---|---|---|---|",
            f"| (a) a minute of events ({run.minute_events:,} posted at {MINUTE_RATE:,}/s, one batch a second), absorbed by one"
            f" `select cartpulse.absorb()` | {run.minute_absorb[0]:.3f} s wall ({run.minute_absorb[1]:,} pending rows"
            f" freed) | ≤ 1 s | {yes(run.minute_absorb[0] <= 1)} |",
            f"| (b) an absorption with no new events (mean of {run.idle_runs})"
            f" | {idle_total:.3f} CPU s: service {idle['service']:.4f} + database backend {idle['database']:.3f};"
            f" {idle['wall'] * 1000:.1f} ms wall | ≤ 0.2 CPU s | {yes(idle_total <= 0.2)} |",
            f"| (c) `cartpulse scheduler` (as `cartpulse run` starts it: absorber every {cfg.absorb_seconds:g} s,"
            f" `dbt run` every {cfg.refresh_seconds:g} s, the first skipped)"
            f" at {MINUTE_RATE:,} events/s for {w.seconds:.0f} s | {w.total:.2f} to {w.upper:.2f} CPU s ="
            f" **{w.total / w.seconds:.1%} to {w.upper / w.seconds:.1%} of a core** | ≤ 10% | {bracket(w)} |",
            f"| (c) of which the scheduler process (absorber thread, loop) | {w.scheduler_own:.2f} CPU s | | |",
            f"| (c) of which the {w.refreshes} scheduled refreshes' dbt processes | {w.scheduler_children:.2f} CPU s | | |",
            f"| (c) of which its database backends, sampled, by application name | {backends} CPU s | | |",
            f"| (c) PostgreSQL processes that ended in the window (the upper bound adds them: dbt's connections"
            f" the sampling missed, but also autovacuum and parallel workers) | {w.exited:.2f} CPU s | | |",
            f"| (c) the absorber alone (its thread's process and its backend; no dbt) | {absorber_only:.2f} CPU s ="
            f" {absorber_only / w.seconds:.1%} of a core | | |",
            f"| for comparison: `dbt run` with nothing new (what each scheduled refresh starts) | {run.idle_dbt[0]:.1f} s"
            f" wall, {run.idle_dbt[1]:.2f} s in SQL | | |", "",
            "Backend CPU is read from `/proc/<pid>/stat`: the scheduler's backends (every client backend but the"
            " service's and the bench's) are sampled every 0.05 s, which misses what a short dbt connection does"
            " after its last sample (the lower bound); the postmaster's reaped-children time counts every process"
            " that ended in the window, the scheduler's or not (the upper bound). The scheduler's own figures are"
            " its process tree's (psutil; dbt runs as its child). Events posted during the window:"
            f" {w.posted:,}.", ""]


def ingest_section(run: Run) -> list[str]:
    rate, copy = run.events / run.ingest_s, run.events / run.copy_s
    return ["## 4. Ingest", "",
            "| measure | value | target | met? |", "|---|---|---|---|",
            f"| Events API over HTTP (NDJSON, 4 clients, 5,000-event batches) | {rate:,.0f} events/s,"
            f" {run.ingest_bytes / run.ingest_s / 1e6:.1f} MB/s ({run.ingest_s:.0f} s) | ≥ 60,000 | {yes(rate >= 60000)} |",
            f"| raw COPY of the same rows into a table of the same layout | {copy:,.0f} rows/s ({run.copy_s:.0f} s) | | |",
            f"| Events API / raw COPY | {rate / copy:.1%} | ≥ 50% | {yes(rate / copy >= 0.5)} |",
            f"| bulk import of {run.bulk[1]:,} more (NDJSON bodies of 250,000 rows, each absorbed before its answer)"
            f" | {run.bulk[1] / run.bulk[0]:,.0f} events/s ({run.bulk[0]:.0f} s) | | |", ""]


def other_section(run: Run) -> list[str]:
    lines = ["## Beside the table", "", "| measure | result |", "|---|---|",
             f"| first `dbt run` after ingest (absorbs {run.events:,} pending events) | {run.first_dbt[0]:.1f} s"
             f" ({run.first_dbt[1]:.1f} s in SQL) |",
             f"| freshness: acknowledgement → event in an answer | median {run.fresh[0]:.1f} ms; in the very next"
             f" request {run.fresh[1]}/20 times |",
             f"| `dbt run` after a backfill of an old month (August 2026, {run.backfill[0]:,} events, 5,000-event"
             f" batches) | {run.backfill[1]:.1f} s wall, {run.backfill[2]:.2f} s in SQL |",
             f"| `dbt run --full-refresh` | {run.full_refresh[0]:.1f} s wall, {run.full_refresh[1]:.1f} s in SQL |",
             f"| peak memory (PSS), service: gunicorn master + workers | {run.memory['service'] / 2**20:.0f} MiB |",
             f"| peak memory (PSS), PostgreSQL: postmaster + backends | {run.memory['postgres'] / 2**20:.0f} MiB |", ""]
    if run.duck:
        cells = run.latency["after a refresh, no cache"]
        lines += [f"DuckDB {run.duck_version} (in-process, the same rows from CSV, median of 5) against the endpoint"
                  " p50 after a refresh, no cache (the endpoint's SQL runs every time):", "", "| endpoint | parameters | endpoint p50 | DuckDB | endpoint / DuckDB |",
                  "|---|---|---|---|---|"]
        for pipe, label, _ in CELLS:
            ep, dk = cells[(pipe, label)].p(50), run.duck[(pipe, label == "7-day range")]
            lines.append(f"| {pipe} | {label} | {ep:.1f} ms | {dk:.1f} ms | {ep / dk:.2f}× |")
        lines.append("")
    return lines


def targets_section(run: Run) -> list[str]:
    rows = []
    for moment in MOMENTS:
        cells, sql = _cells(run, moment), _sql(run, moment)
        p50 = sum(a <= 5 for a, _ in cells.values())
        p99 = sum(b <= 20 for _, b in cells.values())
        ratios = [sql[(pipe, label == "7-day range")] / cells[(pipe, label)][0] for pipe, label, _ in CELLS]
        rows.append((f"latency {moment}: p50 ≤ 5 ms / p99 ≤ 20 ms / ≥ 10× the seed's SQL, cells met",
                     f"{p50}/6, {p99}/6, {sum(r >= 10 for r in ratios)}/6 (slowest {times(min(ratios))})",
                     yes(p50 == p99 == 6 and min(ratios) >= 10)))
    mix99 = percentile(run.mix.ms, 99)
    rows.append(("6-query mix at concurrency 8: ≥ 500 req/s, p99 ≤ 50 ms", f"{run.mix.rate:,.0f} req/s, p99 {mix99:.1f} ms",
                 yes(run.mix.rate >= 500 and mix99 <= 50)))
    q99 = percentile(run.mix_query.ms, 99)
    rows.append(("the same mix with `Cache-Control: no-cache` (every request runs its SQL)",
                 f"{run.mix_query.rate:,.0f} req/s, p99 {q99:.1f} ms", yes(run.mix_query.rate >= 500 and q99 <= 50)))
    rows.append(("random 7-day windows: ≥ 200 req/s", f"{run.windows.rate:,.0f} req/s", yes(run.windows.rate >= 200)))
    rows.append(("a minute of events absorbed in ≤ 1 s", f"{run.minute_absorb[0]:.3f} s", yes(run.minute_absorb[0] <= 1)))
    idle = run.idle_absorb["service"] + run.idle_absorb["database"]
    rows.append(("a refresh with no new events ≤ 0.2 CPU s", f"{idle:.3f} CPU s", yes(idle <= 0.2)))
    w = run.window
    rows.append(("what keeps the rollups current ≤ 10% of a core at 1,000 events/s",
                 f"{w.total / w.seconds:.1%} to {w.upper / w.seconds:.1%}", bracket(w)))
    rate, copy = run.events / run.ingest_s, run.events / run.copy_s
    rows.append(("ingest ≥ 60,000 events/s and ≥ 50% of a raw COPY", f"{rate:,.0f} events/s, {rate / copy:.1%}",
                 yes(rate >= 60000 and rate / copy >= 0.5)))
    rows.append(("`make loadtest`: ≥ 300 req/s, p99 ≤ 200 ms, 0 5xx, stored = acknowledged",
                 "a separate run: [bench/loadtest.md](loadtest.md)", "see there"))
    rows.append(("a row that breaks one read into its parts", "section 6", "**yes**"))
    return ["## Targets (issue #12), from the run above", "", "| target | measured | met? |", "|---|---|---|",
            *[f"| {a} | {b} | {c} |" for a, b, c in rows], ""]


def bounds(run: Run) -> list[str]:
    """What bounds each missed target, in this run's figures."""
    out = []
    for moment in MEASURED:
        slow = [(key, cell) for key, cell in run.latency[moment].items() if cell.p(50) > 5 or cell.p(99) > 20]
        for (pipe, label), cell in slow:
            b = cell.breakdown()
            top = max(PHASES[:-1], key=lambda name: b[name])
            out.append(f"{pipe} ({label}, {moment}): p50 {cell.p(50):.1f} ms, p99 {cell.p(99):.1f} ms; the largest"
                       f" part is {top} at {b[top]:.1f} ms (query {b['query']:.1f}, render {b['render']:.1f},"
                       f" HTTP {b['http']:.1f}, auth + rate limit {b['auth'] + b['ratelimit']:.1f} ms).")
    out += bulk_bounds(run)
    reads = run.window.reads
    worst = max(reads, key=lambda key: percentile(reads[key], 99))
    if percentile(reads[worst], 99) > 20:
        out.append(f"While the absorber runs, the slowest tail is {worst[0]} ({worst[1]}): p99"
                   f" {percentile(reads[worst], 99):.1f} ms against {_cells(run, 'after a refresh')[worst][1]:.1f} ms"
                   " after a refresh — reads share 2 cores with ingest, the absorber and the scheduled `dbt run`s.")
    for label, mix, cpu in (("The mix", run.mix, run.mix_cpu), ("The mix without the cache", run.mix_query, run.mix_query_cpu)):
        if mix.rate < 500 or percentile(mix.ms, 99) > 50:
            per = {k: v / mix.requests * 1000 for k, v in cpu.items()}
            total = sum(per.values())
            out.append(f"{label} at concurrency 8 is CPU-bound: each read costs {total:.1f} ms of CPU (API"
                       f" {per.get('api', 0):.1f}, database {per.get('database', 0):.1f}), so 2 cores allow at most"
                       f" ~{2000 / total:.0f} req/s before the load generator takes its share; measured {mix.rate:.0f}.")
    if run.windows.rate < 200:
        out.append(f"Random windows ({run.windows.rate:.0f} req/s, p50 {percentile(run.windows.ms, 50):.0f} ms against"
                   f" {percentile(run.mix.ms, 50):.0f} ms for the mix): no two windows alike, so none is cached; a window"
                   " whose bounds fall inside hours reads the whole days from the daily rollups, the whole hours of its"
                   " partial days from the hourly rollups and the partial hours at both ends from the events table"
                   f" (docs/realtime.md): on average an hour of events, about {run.events // 720:,} rows per request at"
                   " this size, plus up to 46 hours of hourly rollup rows, growing with the data.")
    w = run.window
    if w.upper / w.seconds > 0.10:
        dbt = w.scheduler_children + w.backends.get("dbt", 0.0)
        out.append(f"The scheduler used {w.total:.1f} to {w.upper:.1f} CPU s in {w.seconds:.0f} s; {dbt:.1f} of them"
                   f" are the {w.refreshes} scheduled `dbt run`s' own processes (dbt starts, parses the project and"
                   f" runs `source freshness` each time, with almost nothing left to absorb) and"
                   f" {w.scheduler_own + w.backends.get('cartpulse-absorber', 0.0):.1f} the absorber.")
    idle = run.idle_absorb["service"] + run.idle_absorb["database"]
    if idle > 0.2:
        out.append(f"An idle absorption costs {idle:.3f} CPU s, {run.idle_absorb['database']:.3f} of it in the database.")
    if run.minute_absorb[0] > 1:
        out.append(f"Absorbing a minute of events took {run.minute_absorb[0]:.2f} s.")
    rate, copy = run.events / run.ingest_s, run.events / run.copy_s
    if rate < 60000 or rate / copy < 0.5:
        out.append(f"Ingest: {rate:,.0f} events/s over HTTP against {copy:,.0f} rows/s by COPY; each event is"
                   " parsed and validated in Python and written twice (the events table and its pending twin).")
    if not out:
        return ["Every target above that this run measures is met.", ""]
    return ["### What bounds the ones that miss", "", *[f"- {line}" for line in out], ""]


def bulk_bounds(run: Run) -> list[str]:
    """Why reads are slower right after the bulk load although nothing is pending."""
    before, after = run.latency["after a refresh, no cache"], run.latency["after a bulk load, no cache"]
    growth = {key: (before[key].breakdown()["query"], after[key].breakdown()["query"]) for key in before}
    (pipe, label), (q0, q1) = max(growth.items(), key=lambda item: item[1][1] / item[1][0])
    if q1 <= q0 * 1.2:
        return []
    return [f"Right after the bulk load, {run.pending_after_bulk:,} rows were pending, yet the query part grew, most"
            f" for {pipe} ({label}): {q0:.1f} → {q1:.1f} ms median. The imports' absorptions left dead row versions"
            f" that no VACUUM had removed yet ({dead(run)}); every read scans the pending table and the rollups"
            " it reads, dead versions included, until autovacuum (or the absorber's VACUUM, when the scheduler"
            " runs) clears them."]


def render(run: Run) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    load = ", ".join(f"{x:.2f}" for x in run.load_before)
    after = ", ".join(f"{x:.2f}" for x in run.load_after)
    lines = [
        "# Benchmark results", "",
        f"`make bench` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — {run.events:,} events (30 days,"
        " 5,000 products with Zipf-like popularity, 40 countries, ~10% purchases).", "",
        f"Machine: {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB,"
        f" {platform.system()} {platform.release()}; engine: {run.engine}"
        f" ({'embedded PostgreSQL' if run.embedded else 'DATABASE_URL'}); service: `cartpulse serve`,"
        f" {WEB_WORKERS} workers × {WEB_THREADS} threads. Load average (1, 5, 15 min) at the start: {load};"
        f" at the end: {after} (the machine is shared: compare figures within this run). All figures from"
        " this one run.", "",
        *targets_section(run), *bounds(run), *latency_section(run), *throughput_section(run),
        *refresh_section(run), *ingest_section(run),
        "## 5. Load test", "",
        "`make loadtest` (16 clients, ingest plus reads, 60 s) is a separate run: [bench/loadtest.md](loadtest.md).", "",
        *breakdown_section(run), *other_section(run)]
    return "\n".join(lines) + "\n"

