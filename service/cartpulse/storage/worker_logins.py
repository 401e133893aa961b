"""Citus: letting the coordinator log in to the workers as the roles people's SQL runs as.

Citus runs a statement's part on a worker over a connection it opens as the *current*
role: after ``SET LOCAL ROLE cartpulse_query`` (the Query API, storage/query_role.py)
that is ``cartpulse_query``, and for an analyst her own login (storage/roles.py). So
such a role must be able to log in to every worker, and on a cluster whose nodes ask
each other for a password (scram-sha-256), Citus must know that password: it takes it
from ``pg_dist_authinfo``, a catalog of the coordinator's database that only superusers
read. This module makes both true for each role, and checks it.

Citus copies a role to the workers as the coordinator has it (its LOGIN and its password
verifier), not only when it is created: again whenever a database of the cluster first
uses the role (a GRANT to it on a distributed table, say) and when a worker is added. A
role that differed on the workers would be put back, so the role is the same on every
node: the query role is a login everywhere (still holding only the Query API's grants),
with a password nobody is given. An analyst's password is the one she is given.

These passwords are derived, so that every database on the cluster (each has its own
``pg_dist_authinfo``, while roles belong to the server) records the same one: the hex
SHA-256 of a per-cluster key, the role's name and its oid (a login made again gets a new
password). The key is the password verifier of the NOLOGIN role ``cartpulse_cluster_key``
on the coordinator: random, made once, on the server, by a statement that holds no
secret, in ``pg_authid`` (which only superusers read), and never copied to the workers
(the role is created unpropagated and granted nothing). A password leaves the server
only as the SCRAM verifier computed here; ``pg_dist_authinfo`` is filled from the key on
the server, so no statement and no bound value holds one (docs/citus.md, "Logins on the
workers").

All of this needs a superuser (``pg_authid``, ``pg_dist_authinfo``); without one,
``provision`` says what an operator must run instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import psycopg
from psycopg import sql

#: The NOLOGIN role whose password verifier on the coordinator is the cluster's key.
KEY_ROLE = "cartpulse_cluster_key"
#: What an operator runs when CartPulse's user may not set the logins up itself.
OPERATOR = "run `cartpulse init` once with a superuser's DATABASE_URL (docs/citus.md, \"Logins on the workers\")"

_MAKE_KEY = sql.SQL("""
do $key$
begin
    if not exists (select from pg_authid where rolname = {role}) then
        set local citus.enable_create_role_propagation = off;
        execute format('create role %I nologin password %L', {role}, 'SCRAM-SHA-256$4096:'
            || encode(substr(sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 1, 16), 'base64') || '$'
            || encode(sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'base64') || ':'
            || encode(sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'base64'));
    end if;
end
$key$""")
#: The password of role %(role)s, derived on the coordinator from the key.
_PASSWORD = ("(select encode(sha256(convert_to(k.rolpassword || '/' || r.rolname || '/' || r.oid::text, 'UTF8')),"
             " 'hex') from pg_authid k, pg_authid r where k.rolname = %(key)s and r.rolname = %(role)s::name)")
_STATE = sql.SQL("select rolcanlogin::text || ' ' || coalesce(rolpassword, '') from pg_authid where rolname = {}")


def allowed(conn: psycopg.Connection) -> bool:
    """Whether CartPulse's user may set these logins up (a superuser)."""
    return conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()[0]


def login_password(conn: psycopg.Connection, name: str) -> str:
    """The password of the existing role ``name`` (the key made first if missing)."""
    if conn.execute("select 1 from pg_authid where rolname = %s", [KEY_ROLE]).fetchone() is None:
        with conn.transaction():
            # One key per server, even when several databases start at once (the lock is
            # taken only then: a transaction that made a role, as an analyst's creation
            # does, would deadlock on it with another).
            conn.execute("lock table pg_catalog.pg_authid in share row exclusive mode")
            conn.execute(_MAKE_KEY.format(role=sql.Literal(KEY_ROLE)))
    return conn.execute(f"select {_PASSWORD}", {"role": name, "key": KEY_ROLE}).fetchone()[0]


def provision(conn: psycopg.Connection, names: list[str], own: tuple[str, ...] = ()) -> str | None:
    """Make each role in ``names`` a login on every node whose password Citus holds; the
    roles in ``own`` get their derived password here, the others (analysts) must have
    been created with it. None when done, else why not and what an operator must run.
    Only what differs is written: an unchanged cluster changes no catalog row."""
    if not allowed(conn):
        return f"CartPulse's database user is not a superuser, which pg_dist_authinfo needs: {OPERATOR}"
    problems = [f"Citus cannot log in to the workers as {name}: {problem}" for name in names
                if (problem := _provision_one(conn, name, name in own))]
    return "; ".join(problems) or None


def _provision_one(conn: psycopg.Connection, name: str, own: bool) -> str | None:
    password = login_password(conn, name)
    coordinator = conn.execute(_STATE.format(sql.Literal(name))).fetchone()[0]
    if not own and not _accepted(coordinator, password):
        return "its password was not made for Citus (created before this set-up): delete the login and create it again"
    keys = {"role": name, "key": KEY_ROLE}
    with conn.transaction():
        conn.execute(f"delete from pg_dist_authinfo where nodeid = 0 and rolename = %(role)s::name"
                     f" and authinfo is distinct from 'password=' || {_PASSWORD}", keys)
        conn.execute(f"insert into pg_dist_authinfo (nodeid, rolename, authinfo)"
                     f" select 0, %(role)s::name, 'password=' || {_PASSWORD} where not exists"
                     f" (select from pg_dist_authinfo where nodeid = 0 and rolename = %(role)s::name)", keys)
    states = [coordinator] + [result if ok else "" for ok, result in conn.execute(
        "select success, result from run_command_on_workers(%s)", [_STATE.format(sql.Literal(name)).as_string(conn)])]
    if all(_accepted(state, password) for state in states):
        return None
    # The same on every node, set on each (Citus propagates ALTER ROLE only for a role
    # this database created; here it would propagate twice), so that whatever Citus
    # copies from the coordinator later is right too.
    verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
    command = sql.SQL("set local citus.enable_alter_role_propagation = off; alter role {} login password {}").format(
        sql.Identifier(name), sql.Literal(verifier)).as_string(conn)
    with conn.transaction():
        conn.execute(command)
    failed = [f"{host}:{port}: {result}" for host, port, ok, result in conn.execute(
        "select nodename, nodeport, success, result from run_command_on_workers(%s)", [command]) if not ok]
    return "; ".join(failed) or None


def _accepted(state: str, password: str) -> bool:
    """Whether a node's ``rolcanlogin rolpassword`` lets Citus log in with ``password``."""
    return state.startswith("true ") and accepts(state[5:], password)


def forget(conn: psycopg.Connection, name: str) -> None:
    """Drop the ``pg_dist_authinfo`` row of a role that is gone (when allowed to)."""
    try:
        with conn.transaction():
            conn.execute("delete from pg_dist_authinfo where rolename = %s::name", [name])
    except psycopg.errors.InsufficientPrivilege:
        pass


def accepts(verifier: str, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier (``pg_authid.rolpassword``) is of ``password``
    (RFC 5802: the stored and server keys from the salted password)."""
    try:
        method, iterations, salt, stored, server = verifier.replace("$", ":").split(":")
        if method != "SCRAM-SHA-256":
            return False
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return (hmac.compare_digest(base64.b64encode(hashlib.sha256(client_key).digest()).decode(), stored)
            and hmac.compare_digest(base64.b64encode(server_key).decode(), server))
