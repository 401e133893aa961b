"""``cartpulse delete NAME --condition SQL [--dry-run]``, ``cartpulse truncate NAME`` and
``cartpulse erase --user VALUE [--datasource NAME] [--column COLUMN]``.

The same operations as ``POST /v0/datasources/<name>/delete`` and ``/truncate``
(ingest/deletes.py), run straight against the database: the same parsed condition, the
same single transaction, the same job row in ``cartpulse.jobs``. Each prints its answer
as JSON; a condition that is not accepted exits with status 2 and the reason. ``erase``
is the GDPR erasure (ingest/erase.py): one person's rows and traces, with what it removed
from each place.
"""

from __future__ import annotations

import json
import sys


def add_parsers(sub) -> None:
    """Register ``delete`` and ``truncate`` on the ``cartpulse`` command's subparsers."""
    delete = sub.add_parser("delete", help="delete the rows of a data source matching a condition (exact at once)")
    delete.add_argument("name", help="the data source")
    delete.add_argument("--condition", required=True, help="e.g. \"country = 'France'\" (Tinybird's delete_condition)")
    delete.add_argument("--dry-run", action="store_true", help="count the rows it would delete; change nothing")
    truncate = sub.add_parser("truncate", help="empty a data source and its rollups (or NAME_quarantine)")
    truncate.add_argument("name", help="the data source, or <data source>_quarantine")
    erase = sub.add_parser("erase", help="GDPR: erase one person's events and traces everywhere CartPulse keeps them")
    erase.add_argument("--user", required=True, help="the value that names the person (e.g. their user_id)")
    erase.add_argument("--datasource", default="ecommerce_events", help="the data source (default ecommerce_events)")
    erase.add_argument("--column", help="a personal column of it (default: its first, user_id)")


def run(settings, url: str, args) -> int:
    """``cartpulse delete`` or ``cartpulse truncate``: print the result as JSON."""
    from cartpulse.errors import ApiError
    from cartpulse.ingest import deletes
    from cartpulse.ingest.delete_condition import parse
    from cartpulse.project.datasources import for_settings
    from cartpulse.storage.db import Database

    sources = for_settings(settings)
    if args.command == "erase":
        args.name = args.datasource
    source = sources.get(args.name)
    quarantined = next((s for s in sources.values() if s.quarantine == args.name), None)
    if source is None and (args.command != "truncate" or quarantined is None):
        print(f"cartpulse {args.command}: data source '{args.name}' not found", file=sys.stderr)
        return 2
    db = Database(url, pool_size=1, statement_timeout_ms=settings.statement_timeout_ms)
    try:
        if args.command == "erase":
            from cartpulse.ingest.erase import erase, personal_column

            answer = erase(db, source, personal_column(source, args.column), args.user).as_json()
        elif args.command == "truncate":
            if source is None:
                answer = {"rows_affected": deletes.truncate_quarantine(db, quarantined)}
            else:
                done = deletes.truncate(db, source, None)
                answer = {"job_id": done.job_id, "rows_affected": done.rows}
        else:
            condition = parse(args.condition, source)
            if args.dry_run:
                answer = {"rows_to_be_deleted": deletes.count_matching(db, source, condition)}
            else:
                done = deletes.delete_rows(db, source, condition, None, settings.absorb_after_rows)
                answer = {"job_id": done.job_id, "rows_affected": done.rows}
    except ApiError as err:
        print(f"cartpulse {args.command}: {err.message}; nothing was changed", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    print(json.dumps(answer))
    return 0
