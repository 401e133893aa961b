"""PostgreSQL roles for people who read CartPulse's database directly.

Analysts get a login of their own (``cartpulse analyst create NAME``), a member of one
NOLOGIN group role, ``cartpulse_analysts``. The group holds the privileges: dbt grants it
read access to the models and the data sources after every run (macros/analysts.sql),
without the personal columns, which analysts read pseudonymised in the analyst schema.
A login therefore never needs grants of its own, and removing one is dropping a role.

Roles belong to the whole server, not to one database: creating one that exists is a
no-op, and a server where CartPulse's user may not create roles just goes without.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable

import psycopg
from psycopg import errors, sql

log = logging.getLogger(__name__)

# The group role analysts log in through; dbt_project.yml's var `analyst_role` names it too.
ANALYSTS = "cartpulse_analysts"

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def ensure_group(conn: psycopg.Connection, name: str, without: str = "analyst logins are not available") -> bool:
    """Create the NOLOGIN role ``name`` unless it exists; False when not allowed (logged,
    saying what goes ``without`` it). The analysts' group and the Query API's role
    (query_role.py) are both made here: one way to create a role CartPulse needs."""
    if conn.execute("select 1 from pg_roles where rolname = %s", [name]).fetchone():
        return True
    try:
        with conn.transaction():
            conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(name)))
    except (errors.DuplicateObject, errors.UniqueViolation):  # another start made it meanwhile
        pass
    except errors.InsufficientPrivilege:
        log.warning("cannot create the role %s (CartPulse's database user lacks CREATEROLE): %s;"
                    " as a superuser run: create role %s nologin", name, without, name)
        return False
    return True


def check_name(name: str) -> str:
    """A login name: lowercase letters, digits and _, as PostgreSQL keeps it unquoted."""
    if not _NAME.fullmatch(name) or name.startswith("pg_"):
        raise ValueError(f"{name!r} is not a valid login name: use lowercase letters, digits and _"
                         " (at most 63, not starting with a digit or pg_)")
    return name


def create_login(conn: psycopg.Connection, name: str, group: str,
                 derive: Callable[[psycopg.Connection, str], str] | None = None) -> str:
    """Create the login ``name`` in ``group``, read-only by default; return its password:
    random, or ``derive(conn, name)`` once the role exists (on Citus, a password the
    coordinator can derive again to log in to the workers: storage/worker_logins.py).

    The password goes to the server as a SCRAM verifier computed here, so the plain text
    is in no statement (nor in a server log of statements)."""
    check_name(name)
    if conn.execute("select 1 from pg_roles where rolname = %s", [name]).fetchone():
        raise ValueError(f"the role {name} exists already")
    with conn.transaction():
        conn.execute(sql.SQL("create role {} login in role {}").format(sql.Identifier(name), sql.Identifier(group)))
        password = derive(conn, name) if derive else secrets.token_urlsafe(24)
        verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
        conn.execute(sql.SQL("alter role {} password {}").format(sql.Identifier(name), sql.Literal(verifier)))
        # Belt and braces: the group holds no write privilege anyway.
        conn.execute(sql.SQL("alter role {} set default_transaction_read_only = on").format(sql.Identifier(name)))
    return password


def members(conn: psycopg.Connection, group: str) -> list[str]:
    """The roles that are members of ``group``, by name."""
    return [name for (name,) in conn.execute(
        "select r.rolname from pg_auth_members m join pg_roles r on r.oid = m.member"
        " join pg_roles g on g.oid = m.roleid where g.rolname = %s order by 1", [group])]


def drop_login(conn: psycopg.Connection, name: str, group: str) -> None:
    """Drop the login ``name``, only if it is a member of ``group`` (never another role)."""
    check_name(name)
    if name not in members(conn, group):
        raise ValueError(f"{name} is not an analyst login (a member of {group})")
    conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))
