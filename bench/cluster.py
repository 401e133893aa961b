"""The Citus part of `make bench-capacity` (capacity.py runs it when DATABASE_URL is a
Citus coordinator): a database of its own on every node, each node's CPU, WAL and bytes.

* The database: ``create_cluster_database`` (storage/citus.py, as the tests make theirs)
  makes a fresh one on every node from DATABASE_URL's, which may be any database of the
  coordinator that has the extension and the workers; it is dropped at the end.
* CPU per node: the nodes are local processes here, so each node's postmaster is found
  from ``pg_dist_node`` (a connection to the node, its backend's parent) and its process
  tree is metered as capacity.py meters one server. The nodes may be shared with other
  users (tests of other databases): ``OtherDatabases`` samples the backends of every other
  database on each node and their CPU is taken out of that node's figure. What remains is
  this database's backends plus the node's shared processes (WAL writer, checkpointer,
  I/O workers), which serve everyone: a conservative figure.
* WAL: each node's ``pg_current_wal_lsn()`` before and after (a node's WAL is one stream for
  all its databases, hence the other databases' CPU is reported beside it as the noise).
* Storage: ``citus_total_relation_size`` of every partition (every shard, indexes
  included), split by worker from ``citus_shards``; then every partition converted to
  Citus columnar (``alter_table_set_access_method``), timed, and measured again.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import bench
from cartpulse.storage import citus

#: How often the other databases' backends are sampled (s): a backend of another database
#: that exits between two samples leaves its last moments counted as ours.
SAMPLE_SECONDS = 0.1
EVENTS_TABLE = "raw.ecommerce_events"
#: Connections to each worker a session keeps in the second half of the ingest: the shards
#: a batch writes on one worker (32 per partition over 2 workers), each COPYed over its own.
KEPT = 16
#: The ingest's two halves: (part, connections kept per worker, None for Citus's default).
INGEST_PARTS = (("ingest, Citus defaults", None), (f"ingest, {KEPT} connections kept per worker", KEPT))


@dataclass
class Node:
    name: str  # "coordinator", or "worker <host>:<port>"
    url: str  # this database on the node
    admin_url: str  # DATABASE_URL's database on the node (where the sampler connects)
    postmaster: int | None

    @property
    def worker(self) -> bool:
        return self.name != "coordinator"


def is_cluster(url: str | None) -> bool:
    """Whether DATABASE_URL is a Citus coordinator with workers."""
    return bool(url) and citus.is_citus_server(url)


def make_database(admin_url: str) -> tuple[str, str]:
    """A fresh database on every node of the cluster (URL, name)."""
    name = "cartpulse_capacity_" + secrets.token_hex(4)
    return citus.create_cluster_database(admin_url, name), name


def drop_database(admin_url: str, name: str) -> None:
    """Drop the run's database on every node. A worker may still hold, for a moment, a
    session of the coordinator backends that just ended: retried for up to 30 s."""
    for attempt in range(30):
        try:
            return citus.drop_cluster_database(admin_url, name)
        except psycopg.errors.ObjectInUse:
            if attempt == 29:
                raise
            time.sleep(1)


def keep_connections(url: str, count: int) -> None:
    """Let every later session of this database keep ``count`` connections per worker
    between transactions (``citus.max_cached_conns_per_worker``, 1 by default)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("alter database {} set citus.max_cached_conns_per_worker = {}").format(
            sql.Identifier(database_name(url)), sql.Literal(count)))


def nodes(url: str, admin_url: str) -> list[Node]:
    """The coordinator and the active workers, each with its postmaster's pid."""
    with psycopg.connect(url) as conn:
        listed = conn.execute("select groupid, nodename, nodeport from pg_dist_node"
                              " where noderole = 'primary' and isactive order by groupid, nodeid").fetchall()
    found = []
    for group, host, port in listed:
        node_url, node_admin = (make_conninfo(u, host=host, port=port) for u in (url, admin_url))
        found.append(Node("coordinator" if group == 0 else f"worker {host}:{port}", node_url, node_admin,
                          bench.postmaster_of(node_url)))
    return found


class OtherDatabases:
    """CPU seconds of other databases' backends on each node, between start() and stop(),
    sampled every SAMPLE_SECONDS (``pg_stat_activity`` names each backend's database;
    the sampler's own connections are to DATABASE_URL's database, so they count there)."""

    def __init__(self, database: str, cluster: list[Node]):
        self.database = database
        self.cluster = cluster
        self.first: dict[tuple, float] = {}
        self.last: dict[tuple, float] = {}

    def _sample(self, conns: dict[str, psycopg.Connection], initial: bool = False) -> None:
        for name, conn in conns.items():
            pids = conn.execute("select pid from pg_stat_activity where datname is not null and datname <> %s",
                                [self.database]).fetchall()
            for (pid,) in pids:
                try:
                    proc = psutil.Process(pid)
                    t = proc.cpu_times()
                    key = (name, pid, proc.create_time())
                except psutil.Error:
                    continue
                # A backend first seen after the start began during the window: all its CPU counts.
                self.first.setdefault(key, t.user + t.system if initial else 0.0)
                self.last[key] = t.user + t.system

    def start(self) -> None:
        self.conns = {n.name: psycopg.connect(n.admin_url, autocommit=True) for n in self.cluster}
        self._sample(self.conns, initial=True)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(SAMPLE_SECONDS):
            self._sample(self.conns)

    def stop(self) -> dict[str, float]:
        self.stopping.set()
        self.thread.join()
        self._sample(self.conns)
        for conn in self.conns.values():
            conn.close()
        seconds: dict[str, float] = {}
        for key, last in self.last.items():
            seconds[key[0]] = seconds.get(key[0], 0.0) + last - self.first[key]
        return seconds


def wal_positions(cluster: list[Node]) -> dict[str, str]:
    positions = {}
    for node in cluster:
        with psycopg.connect(node.url) as conn:
            positions[node.name] = conn.execute("select pg_current_wal_lsn()::text").fetchone()[0]
    return positions


def wal_bytes_since(cluster: list[Node], start: dict[str, str]) -> dict[str, int]:
    written = {}
    for node in cluster:
        with psycopg.connect(node.url) as conn:
            written[node.name] = int(conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)",
                                                  [start[node.name]]).fetchone()[0])
    return written


def events_per_worker(url: str) -> dict[str, int]:
    """Stored events per worker, counted on each shard (a partitioned shard counts its
    partitions' shards, attached to it on the worker)."""
    with psycopg.connect(url) as conn:
        return dict(conn.execute(
            "select 'worker ' || p.nodename || ':' || p.nodeport, sum(r.result::bigint)"
            " from run_command_on_shards(%s, 'select count(*) from %%s') r"
            " join pg_dist_shard_placement p using (shardid) group by 1 order by 1", [EVENTS_TABLE]).fetchall())


def partitions(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "select inhrelid::regclass::text from pg_inherits where inhparent = %s::regclass order by 1",
        [EVENTS_TABLE]).fetchall()]


def bytes_per_worker(url: str) -> dict[str, int]:
    """The events' shards (every partition's, indexes included) by worker."""
    with psycopg.connect(url) as conn:
        return dict(conn.execute(
            "select 'worker ' || nodename || ':' || nodeport, sum(shard_size)::bigint from citus_shards"
            " where table_name = any(%s::regclass[]) group by 1 order by 1", [partitions(conn)]).fetchall())


def placements_per_shard(url: str) -> float:
    """Copies of each shard (citus.shard_replication_factor when the table was made)."""
    with psycopg.connect(url) as conn:
        return float(conn.execute(
            "select count(*)::float / count(distinct shardid) from pg_dist_shard_placement"
            " join pg_dist_shard using (shardid) where logicalrelid = any(%s::regclass[])",
            [partitions(conn)]).fetchone()[0])


def to_columnar(url: str) -> tuple[float, int]:
    """Convert every partition of the events to Citus columnar, as an operator would with
    ``alter_old_partitions_set_access_method`` past the last partition; (seconds, partitions)."""
    with psycopg.connect(url, autocommit=True) as conn:
        # Columnar is an extension of its own since Citus 11.1 (created on the workers too).
        conn.execute("create extension if not exists citus_columnar")
        parts = partitions(conn)
        t = time.perf_counter()
        for part in parts:
            conn.execute("select alter_table_set_access_method(%s::regclass, 'columnar')", [part])
        seconds = time.perf_counter() - t
        conn.execute(f"vacuum analyze {EVENTS_TABLE}")
        methods = conn.execute("select distinct a.amname from pg_class c join pg_am a on a.oid = c.relam"
                               " where c.oid = any(%s::regclass[])", [partitions(conn)]).fetchall()
    assert methods == [("columnar",)], methods
    return seconds, len(parts)


def database_name(url: str) -> str:
    return conninfo_to_dict(url)["dbname"]


# --------------------------------------------------------------------------- rows


NOTE = (
    "On the cluster: *coordinator*, *worker* and *all nodes* are CPU seconds of those nodes'"
    " PostgreSQL process trees, less what other databases' backends spent on them meanwhile"
    " (sampled every 0.1 s from `pg_stat_activity`; the row *other databases' CPU, taken out*"
    " says how much), so the nodes' shared processes (WAL writer, checkpointer, I/O workers)"
    " count as this run's. A node's WAL is one stream for all its databases: with other"
    " databases busy, the WAL rows include some of theirs. The three nodes share this machine's"
    " cores and talk over loopback, so network cost is not in these figures. The ingest's first half"
    " runs as Citus comes; its second half, and every read after it, with"
    f" `citus.max_cached_conns_per_worker = {KEPT}` on the run's database (API restarted), so that a"
    " batch's COPY to each shard no longer opens a connection to the worker."
)


def _workers_cpu(m, cluster: list[Node]) -> float:
    return sum(m.cpu[n.name] for n in cluster if n.worker)


def cpu_rows(part: str, unit: str, count: int, m, cluster: list[Node]) -> list[tuple[str, str, str]]:
    """``count`` per core of the coordinator, of the workers together, of all nodes, and
    what was taken out for other databases (``m`` a capacity.Meter over the nodes)."""
    workers = [n for n in cluster if n.worker]
    excluded = ", ".join(f"{n.name} {m.excluded.get(n.name, 0.0):.1f}" for n in cluster)
    return [
        (part, f"{unit} per coordinator core", bench.per_core(count, m.cpu["coordinator"])),
        (part, f"{unit} per worker core (the {len(workers)} workers' CPU seconds together)",
         bench.per_core(count, _workers_cpu(m, cluster))),
        (part, f"{unit} per database core, all nodes", bench.per_core(count, sum(m.cpu[n.name] for n in cluster))),
        (part, "other databases' CPU, taken out (s)", excluded),
    ]


def idle_row(m, cluster: list[Node]) -> tuple[str, str, str]:
    """CPU per second of each node with no requests: maintenance daemons, the nodes' shared
    processes (also serving other databases), part of every figure measured on them."""
    return ("idle", f"CPU seconds per second on each node, no requests ({m.wall:.0f} s)",
            ", ".join(f"{n.name} {m.cpu[n.name] / m.wall:.3f}" for n in cluster))


def refresh_row(events: int, m, cluster: list[Node]) -> tuple[str, str, str]:
    """The ``dbt run`` that absorbs every event ingested (the rollups are the coordinator's)."""
    return ("refresh", f"`dbt run` absorbing the {events:,} pending events: events per coordinator core-second;"
            " wall; CPU s coordinator / workers",
            f"{bench.per_core(events, m.cpu['coordinator'])}; {m.wall:.0f} s;"
            f" {m.cpu['coordinator']:.1f} / {_workers_cpu(m, cluster):.1f}")


def wal_rows(part: str, written: dict[str, int], events: int, cluster: list[Node]) -> list[tuple[str, str, str]]:
    workers = [n for n in cluster if n.worker]
    each = " / ".join(f"{written[n.name] / events:.0f}" for n in workers)
    return [
        (part, "WAL bytes per event on the coordinator (what its replica would receive)",
         f"{written['coordinator'] / events:.0f}"),
        (part, "WAL bytes per event on the workers, together (each worker)",
         f"{sum(written[n.name] for n in workers) / events:.0f} ({each})"),
    ]


def sessions(cluster: list[Node]) -> dict[str, int]:
    """Sessions ever opened in this database on each node (``pg_stat_database``)."""
    opened = {}
    for node in cluster:
        with psycopg.connect(node.url) as conn:
            opened[node.name] = conn.execute(
                "select sessions from pg_stat_database where datname = current_database()").fetchone()[0]
    return opened


def sessions_row(part: str, before: dict[str, int], batches: float, cluster: list[Node]) -> tuple[str, str, str]:
    """Connections the coordinator opened to each worker per batch (each a backend started)."""
    now = sessions(cluster)
    return (part, "connections opened per batch on each worker (a backend started for each)",
            " / ".join(f"{(now[n.name] - before[n.name]) / batches:.1f}" for n in cluster if n.worker))


def distribution_row(url: str, events: int) -> tuple[str, str, str]:
    counted = events_per_worker(url)
    assert sum(counted.values()) == events, (counted, events)
    return ("ingest", "events stored per worker (share)",
            "; ".join(f"{name}: {n:,} ({n / events:.1%})" for name, n in counted.items()))


def storage_rows(url: str, events: int, form: str) -> list[tuple[str, str, str]]:
    """Bytes per event on each worker, with this form of storage (heap or columnar)."""
    on = bytes_per_worker(url)
    return [("storage", f"{form}: bytes per event stored on each worker (its shards, indexes included)",
             "; ".join(f"{name}: {size / 2**20:.1f} MiB" for name, size in on.items())
             + f"; {sum(on.values()) / events:.0f} B/event together")]


def describe(url: str, cluster: list[Node]) -> str:
    """The cluster, for the section's first line."""
    with psycopg.connect(url) as conn:
        version = conn.execute("select extversion from pg_extension where extname = 'citus'").fetchone()[0]
        server = conn.execute("show server_version").fetchone()[0]
        parts = partitions(conn)
        shards = conn.execute("select count(*) from pg_dist_shard where logicalrelid = %s::regclass",
                              [parts[0]]).fetchone()[0] if parts else 0
    workers = sum(n.worker for n in cluster)
    return (f"Citus {version} on PostgreSQL {server.split()[0]}: a coordinator and {workers} workers, local processes"
            f" on this machine, in a database made for the run on every node; {shards} shards per partition,"
            f" {placements_per_shard(url):g} placement(s) per shard")
