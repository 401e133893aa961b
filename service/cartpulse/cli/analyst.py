"""``cartpulse analyst create NAME | delete NAME | list``: database logins for analysts.

An analyst's login reads the models and the data sources, with user_id and session_id
only pseudonymised (the analyst schema's views), and writes nothing: it is a member of
the group role dbt grants after every run (storage/roles.py, macros/analysts.sql).
``create`` prints the login's password once, inside a connection URL: it is stored
nowhere else (PostgreSQL keeps a SCRAM verifier of it).
"""

from __future__ import annotations

import sys
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from cartpulse.storage import engine, roles, worker_logins


def add_parser(sub) -> None:
    """Register ``analyst`` and its actions on the ``cartpulse`` command's subparsers."""
    analyst = sub.add_parser("analyst", help="create, list or delete read-only database logins for analysts")
    actions = analyst.add_subparsers(dest="action", required=True)
    actions.add_parser("create", help="a new login; prints its connection URL with the password (shown this once)"
                       ).add_argument("name")
    actions.add_parser("list", help="the analysts' logins")
    actions.add_parser("delete", help="drop an analyst's login").add_argument("name")


def login_url(url: str, user: str, password: str) -> str:
    """``url``'s server and database, as ``user`` with ``password``: a postgresql:// URL
    (a unix socket folder goes in its ``host`` query parameter, as libpq reads it)."""
    info = conninfo_to_dict(url)
    host, port, dbname = info.get("host") or "", info.get("port"), info.get("dbname") or "postgres"
    socket = host.startswith("/")
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{'' if socket else host}"
    netloc += f":{port}" if port and not socket else ""
    params = ([("host", host)] + ([("port", port)] if port else []) if socket else []) + \
        [(key, info[key]) for key in ("sslmode", "sslrootcert") if info.get(key)]
    query = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in params)
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


def cmd_analyst(url: str, args) -> int:
    """``args.action`` on the database at ``url`` (cli/main.py resolves it, starting the
    embedded server when it is the one)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            if args.action == "create":
                if not roles.ensure_group(conn, roles.ANALYSTS):
                    print("cartpulse analyst create: CartPulse's database user may not create roles"
                          " (it needs CREATEROLE)", file=sys.stderr)
                    return 1
                citus = engine.current(conn) == engine.CITUS
                # On Citus, a password the coordinator can give Citus (storage/worker_logins.py).
                derive = worker_logins.login_password if citus and worker_logins.allowed(conn) else None
                password = roles.create_login(conn, args.name, roles.ANALYSTS, derive)
                if citus:
                    problem = worker_logins.provision(conn, [args.name])
                    if problem:
                        print(f"cartpulse analyst create: the login cannot read the distributed tables yet: {problem}",
                              file=sys.stderr)
                print(f"analyst login {args.name} created; its password is in this URL, shown this once:",
                      file=sys.stderr)
                print(login_url(url, args.name, password))
            elif args.action == "delete":
                roles.drop_login(conn, args.name, roles.ANALYSTS)
                if engine.current(conn) == engine.CITUS:
                    worker_logins.forget(conn, args.name)
                print(f"deleted {args.name}", file=sys.stderr)
            else:
                for name in roles.members(conn, roles.ANALYSTS):
                    print(name)
    except ValueError as err:
        print(f"cartpulse analyst {args.action}: {err}", file=sys.stderr)
        return 2
    return 0
