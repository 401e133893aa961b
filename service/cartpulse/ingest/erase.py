"""GDPR erasure: one person's data out of everywhere CartPulse keeps it (``cartpulse erase``).

The person is named by the value of one of the data source's personal columns (declared
``meta: {personal: true}`` in the sources yml; ``user_id`` by default). In one
transaction, exact at once in every endpoint:

* **events**: deleted as ``/delete`` deletes (deletes.py: each one's retraction goes to
  the pending table, so every rollup takes it back; rollups hold sums and counts, never
  the person's values);
* **quarantine lines** whose column holds the value, or whose raw line mentions it
  anywhere (a line too broken to parse still carries it; erasing a little more garbage
  is the safe side);
* **idempotency keys** whose key or answer mentions it (the body itself is never kept,
  only its SHA-256);
* **pipe statistics** whose parameters hold it (an endpoint filtered by the person);
* **jobs** whose condition mentions it (a delete sent through the API names the person;
  the erasure's own job says only which column, ``<column> = <erased>``).

Then, in a second transaction, every rollup absorbs what is pending (waiting for a ``dbt
run`` in progress rather than skipping it), which removes the person's pending rows — the
events not yet absorbed and the retractions, both of which carry the person's values.
Last, VACUUM of every table touched, so the deleted rows' bytes leave the data files
(TimescaleDB's compressed chunks included: a delete there decompresses the batches it
touches, and the compressed tables are vacuumed too). Rows the database wrote to its WAL,
base backups and replicas before are beyond a delete: docs/operations.md says what to do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql

from cartpulse.errors import ApiError
from cartpulse.ingest import deletes, jobs
from cartpulse.ingest.delete_condition import Condition
from cartpulse.project.datasources import DataSource


@dataclass
class Erased:
    """What an erasure removed, by place."""

    events: int = 0
    pending_rows: int = 0
    quarantine_lines: int = 0
    idempotency_keys: int = 0
    pipe_stats_rows: int = 0
    jobs: int = 0
    compressed_chunks: int = 0
    job_id: str = ""

    def as_json(self) -> dict:
        return asdict(self)


def personal_column(source: DataSource, name: str | None) -> str:
    """The column that names the person: ``name``, else the first personal column; it
    must be declared personal (an erasure by any other column is a plain delete)."""
    personal = [c.name for c in source.columns if c.personal]
    if name is None and personal:
        return personal[0]
    if name not in personal:
        raise ApiError(400, f"'{name}' is not a personal column of '{source.name}' (personal: "
                            f"{', '.join(personal) or 'none declared'})")
    return name


def erase(db, source: DataSource, column: str, value: str) -> Erased:
    """Erase every row whose ``column`` is ``value``, and its traces; return the counts."""
    condition = Condition(sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder()), [value],
                          f"{column} = <erased>")
    erased = Erased(job_id=jobs.new_id())
    pending = sql.SQL("select count(*) from {} where {} = %s").format(source.table(source.pending),
                                                                     sql.Identifier(column))
    with db.psycopg() as conn, conn.cursor() as cur:
        conn.execute("set local statement_timeout = 0")
        erased.compressed_chunks = _compressed_chunks(conn, source, column, value)
        erased.events = deletes.delete_in(cur, source, condition)
        erased.quarantine_lines = _count(cur, sql.SQL("delete from {} where {} = %s or strpos(c__raw, %s) > 0").format(
            source.table(source.quarantine), sql.Identifier(column)), [value, value])
        erased.idempotency_keys = _count(cur, "delete from cartpulse.idempotency_keys"
                                              " where strpos(key, %s) > 0 or strpos(response::text, %s) > 0",
                                         [value, value])
        erased.pipe_stats_rows = _count(cur, "delete from cartpulse.pipe_stats where jsonb_path_exists(params,"
                                             " '$.** ? (@ == $v)', jsonb_build_object('v', %s::text))", [value])
        erased.jobs = _count(cur, "delete from cartpulse.jobs where strpos(delete_condition, %s) > 0", [value])
        jobs.record_done(cur, erased.job_id, jobs.DELETE, source.name, erased.events, condition.text, None)
        before = conn.execute(pending, [value]).fetchone()[0]
    with db.psycopg() as conn:
        conn.execute("set local statement_timeout = 0")
        _absorb_everything(conn)
    with db.psycopg() as conn:
        erased.pending_rows = before - conn.execute(pending, [value]).fetchone()[0]
    _vacuum(db, source)
    return erased


def _count(cur, query, params) -> int:
    cur.execute(query, params)
    return cur.rowcount


def _compressed_chunks(conn: psycopg.Connection, source: DataSource, column: str, value: str) -> int:
    """On TimescaleDB: how many compressed chunks hold the person's rows (0 elsewhere)."""
    if conn.execute("select to_regclass('timescaledb_information.chunks') is null").fetchone()[0]:
        return 0
    return conn.execute(sql.SQL(
        "select count(distinct e.tableoid) from {} e join timescaledb_information.chunks c"
        " on e.tableoid = format('%%I.%%I', c.chunk_schema, c.chunk_name)::regclass"
        " where c.is_compressed and c.hypertable_schema = %s and c.hypertable_name = %s and e.{} = %s").format(
        source.table(), sql.Identifier(column)), [source.schema, source.name, value]).fetchone()[0]


def _absorb_everything(conn: psycopg.Connection) -> None:
    """Absorb into every rollup, waiting for the ones a ``dbt run`` holds (the absorber
    skips them), then delete the pending rows every rollup has absorbed: the same
    ``cartpulse.absorb()``, called with every state row already locked by this transaction."""
    if conn.execute("select to_regprocedure('cartpulse.absorb(text)') is null").fetchone()[0]:
        return
    conn.execute("select 1 from cartpulse.rollup_state where to_regclass(rollup) is not null"
                 " order by rollup for update")
    conn.execute("select cartpulse.absorb()")


def _vacuum(db, source: DataSource) -> None:
    """VACUUM what the erasure deleted from, so the rows' bytes are reclaimed (and, on
    TimescaleDB, the compressed chunks' internal tables too)."""
    tables = [source.table(), source.table(source.pending), source.table(source.quarantine)]
    tables += [sql.Identifier("cartpulse", t) for t in ("idempotency_keys", "pipe_stats", "jobs")]
    with psycopg.connect(db.url, autocommit=True) as conn:  # VACUUM runs outside a transaction
        if conn.execute("select to_regclass('_timescaledb_catalog.chunk') is not null").fetchone()[0]:
            tables += [sql.Identifier(schema, name) for schema, name in conn.execute(
                "select cc.schema_name, cc.table_name from _timescaledb_catalog.chunk c"
                " join _timescaledb_catalog.chunk cc on cc.id = c.compressed_chunk_id"
                " join _timescaledb_catalog.hypertable h on h.id = c.hypertable_id"
                " where h.schema_name = %s and h.table_name = %s", [source.schema, source.name])]
        for table in tables:
            conn.execute(sql.SQL("vacuum {}").format(table))
