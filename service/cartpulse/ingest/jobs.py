"""Jobs of the Data Sources API, in Tinybird's shape: ``cartpulse.jobs``.

Tinybird answers a delete with a job that its client polls at ``/v0/jobs/<id>``. CartPulse
runs a delete, truncate or replace inside the request, in one transaction, and writes its
job row in that same transaction with status ``done``: the job exists exactly when the
change is committed, any worker reads it from the table, and a client that polls finds it
finished at the first look. A change that fails stores nothing, its job included; the
request answers the error.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from psycopg.rows import dict_row

DELETE = "delete_data"
TRUNCATE = "truncate_data"
REPLACE = "import"
#: The jobs /v0/jobs lists, newest first.
LIST_LIMIT = 100


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    datasource: str
    status: str
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    delete_condition: str | None = None
    rows_affected: int | None = None
    error: str | None = None

    def as_json(self, base_url: str) -> dict:
        """Tinybird's job object (times as it writes them: UTC, no zone)."""
        body = {"id": self.id, "job_id": self.id, "kind": self.kind, "status": self.status,
                "created_at": _time(self.created_at), "started_at": _time(self.started_at),
                "updated_at": _time(self.updated_at), "is_cancellable": False,
                "job_url": f"{base_url.rstrip('/')}/v0/jobs/{self.id}",
                "datasource": {"id": self.datasource, "name": self.datasource},
                "rows_affected": self.rows_affected}
        if self.delete_condition is not None:
            body["delete_condition"] = self.delete_condition
        if self.error is not None:
            body["error"] = self.error
        return body


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


def new_id() -> str:
    return str(uuid.uuid4())


def record_done(cur, job_id: str, kind: str, datasource: str, rows: int, condition: str | None,
                token_name: str | None) -> None:
    """The job's row, with the caller's cursor: inside the change's own transaction."""
    cur.execute("insert into cartpulse.jobs (id, kind, datasource, status, delete_condition, rows_affected,"
                " token_name, started_at) values (%s, %s, %s, 'done', %s, %s, %s, now())",
                [job_id, kind, datasource, condition, rows, token_name])


_COLUMNS = "id, kind, datasource, status, created_at, started_at, updated_at, delete_condition, rows_affected, error"


def get(db, job_id: str) -> Job | None:
    with db.psycopg() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"select {_COLUMNS} from cartpulse.jobs where id = %s", [job_id]).fetchone()
    return None if row is None else Job(**row)


def recent(db, kind: str | None = None, status: str | None = None) -> list[Job]:
    with db.psycopg() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"select {_COLUMNS} from cartpulse.jobs where (%(kind)s::text is null or kind = %(kind)s)"
                           " and (%(status)s::text is null or status = %(status)s)"
                           " order by created_at desc, id limit %(limit)s",
                           {"kind": kind, "status": status, "limit": LIST_LIMIT}).fetchall()
    return [Job(**row) for row in rows]
