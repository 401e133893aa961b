"""The ``cartpulse`` command: each operation ``make run`` strings together, on its own.

    cartpulse db start|stop|status|url   the embedded PostgreSQL (when DATABASE_URL is unset)
    cartpulse replica start|stop|status|url [--name N]   a streaming replica of it (READ_DATABASE_URLS)
    cartpulse init                       create storage and the admin token
    cartpulse build                      derive the endpoints' rollups and build the models (dbt run)
    cartpulse dbt ARGS…                  any dbt command against CartPulse's database
    cartpulse psql [ARGS…]               psql into CartPulse's database
    cartpulse env                        the exports for plain dbt: eval "$(cartpulse env)"
    cartpulse serve                      the production server (gunicorn)
    cartpulse run                        all of the above, in order, plus the scheduler, until Ctrl-C
    cartpulse scheduler [--once]         refresh the models every REFRESH_SECONDS (or once)
    cartpulse import FILE [--name DS]    bulk-load a CSV, NDJSON or Parquet file into a data source
    cartpulse delete DS --condition SQL [--dry-run]   delete rows by condition (cli/data_commands.py)
    cartpulse truncate DS                empty a data source and its rollups (or DS_quarantine)
    cartpulse erase --user VALUE         GDPR: one person's events and traces, everywhere
    cartpulse generate --events N        synthetic events as NDJSON (stdout, --output, or --url)
    cartpulse token create NAME --scope S [--scope S2…] | list | refresh NAME | delete NAME
    cartpulse analyst create NAME | list | delete NAME   read-only database logins (cli/analyst.py)
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from dataclasses import replace

from cartpulse.config import SettingError, Settings
from cartpulse.storage import embedded

log = logging.getLogger("cartpulse")


def database_url(settings: Settings, start: bool = False) -> str:
    """DATABASE_URL when set; else the embedded server's URL (started when ``start``)."""
    if settings.database_url:
        return settings.database_url
    server = embedded.for_settings(settings)
    return server.start() if start else server.url


def cmd_db(settings: Settings, args) -> int:
    if args.action == "url":
        print(database_url(settings))
        return 0
    if settings.database_url:
        print("DATABASE_URL is set: CartPulse uses that server, not the embedded one.", file=sys.stderr)
        return 1
    return control(embedded.for_settings(settings), args.action)


def control(server: embedded.EmbeddedPostgres, action: str, start=None) -> int:
    """start (printing the URL) | stop | status (exit 3 when stopped) | url, for a local server."""
    if action == "start":
        print((start or server.start)())
    elif action == "stop":
        server.stop()
    elif action == "status":
        running = server.initialized() and server.running()
        print("running" if running else "stopped")
        return 0 if running else 3
    else:
        print(server.url)
    return 0


def cmd_replica(settings: Settings, args) -> int:
    """A local streaming replica of the embedded server, for READ_DATABASE_URLS: made
    once with pg_basebackup (the wheel's binaries), in the state folder under its name."""
    if settings.database_url:
        print("DATABASE_URL is set: make replicas of that server with its own tools (pg_basebackup -R,"
              " or your provider's read replicas), then list them in READ_DATABASE_URLS. See docs/scaling.md.",
              file=sys.stderr)
        return 1
    replica = embedded.EmbeddedPostgres(settings.state_dir / args.name, settings={"hot_standby_feedback": "on"})

    def start() -> str:
        primary = embedded.for_settings(settings)
        primary.start()
        replica.follow(primary)
        return replica.start()

    return control(replica, args.action, start)


def init(settings: Settings, url: str) -> str:
    """Create storage; return the admin token."""
    from cartpulse.access.auth import ensure_admin_token
    from cartpulse.storage.schema import create_storage

    create_storage(url, settings)
    return ensure_admin_token(url, settings.state_dir, settings.admin_token)


def cmd_init(settings: Settings, args) -> int:
    init(settings, database_url(settings, start=True))
    print("storage ready")
    return 0


def cmd_dbt(settings: Settings, args, *command: str) -> int:
    """dbt in the project, deriving first and reporting after a build (cli/derivations.py);
    ``cartpulse build`` is ``cmd_dbt`` with ``run``."""
    from cartpulse.cli.derivations import dbt_deriving

    return dbt_deriving(settings, database_url(settings), [*command, *args.rest])


def cmd_env(settings: Settings, args) -> int:
    """Print the exports that make plain ``dbt`` (and psql) reach CartPulse's database:
    ``eval "$(.venv/bin/cartpulse env)"`` in a shell or a crontab line, then ``dbt run``.
    The embedded server is started if it is not running (a cron job finds it up)."""
    import shlex

    from cartpulse.ops.dbt_runner import dbt_variables

    for name, value in dbt_variables(settings, database_url(settings, start=True)).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_psql(settings: Settings, args) -> int:
    try:
        psql = str(embedded.bin_dir() / "psql")  # the same version as the embedded server
    except RuntimeError:
        psql = shutil.which("psql") or "psql"
    os.execvp(psql, [psql, database_url(settings), *args.rest])


def serve(settings: Settings) -> None:
    """Run gunicorn in this process; each worker builds its own app (and pool) after fork."""
    from gunicorn.app.base import BaseApplication

    from cartpulse.cli.access_log import RedactingLogger
    from cartpulse.cli.open_files import raise_soft_limit
    from cartpulse.ops import multiproc

    raise_soft_limit()  # every connection is a file: the workers inherit the raised limit
    # Before any worker imports prometheus_client (metrics.py); the app reads the folder.
    settings = replace(settings, prometheus_multiproc_dir=multiproc.prepare(settings.prometheus_multiproc_dir))
    from cartpulse.app import create_app

    def watch_database(worker) -> None:
        """post_worker_init: log, with backoff, until the database answers.

        A thread of each worker (never of the master, which forks): the worker serves at
        once and answers 503 until the database is up; this makes that state plain in the log."""
        import threading

        from cartpulse.storage.db import wait_until_reachable

        threading.Thread(target=wait_until_reachable, args=(settings.database_url,),
                         name="database-watch", daemon=True).start()

    class Server(BaseApplication):
        def load_config(self):
            self.settings = settings  # FrontWorker reads its body limits here
            self.cfg.set("bind", f"{settings.bind_address}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("threads", settings.threads)
            self.cfg.set("worker_class", "cartpulse.cli.front.FrontWorker")  # no thread waits on a slow client
            self.cfg.set("timeout", 120)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", settings.access_log)
            self.cfg.set("logger_class", RedactingLogger)  # no ?token= in the access log
            self.cfg.set("control_socket_disable", True)
            self.cfg.set("post_worker_init", watch_database)
            self.cfg.set("child_exit", multiproc.worker_exited)

        def load(self):
            return create_app(settings)

    Server().run()


def cmd_serve(settings: Settings, args) -> int:
    from cartpulse.cli.preflight import check_port_free

    check_port_free(settings.bind_address, settings.port)
    serve(replace(settings, database_url=database_url(settings)))
    return 0


def cmd_token(settings: Settings, args) -> int:
    """Manage API tokens with a direct database connection (no running server needed)."""
    import psycopg

    from cartpulse.access import tokens
    from cartpulse.project.datasources import for_settings

    try:
        with psycopg.connect(database_url(settings)) as conn:
            if args.action == "create":
                print(tokens.create(conn, args.name, args.scope or [], for_settings(settings)))
            elif args.action == "refresh":
                print(tokens.refresh(conn, args.name))
            elif args.action == "delete":
                tokens.delete(conn, args.name)
                print(f"deleted {args.name}", file=sys.stderr)
            else:
                for token in tokens.listing(conn):
                    print(f"{token['name']}\t{' '.join(token['scopes'])}")
    except tokens.TokenError as err:
        print(f"cartpulse token {args.action}: {err}", file=sys.stderr)
        return 2
    return 0


def banner(settings: Settings, token: str, new_token: bool = False) -> str:
    """What ``cartpulse run`` prints: the URL, where the admin token is, and the tour's
    first commands. The token itself is shown once, when it is created: a terminal's
    scrollback and a CI log are no place for a secret. HOST there is the service's URL, as
    in the README; the address served on is BIND_ADDRESS."""
    host = f"http://{settings.bind_address}:{settings.port}"
    kept = settings.state_dir / "admin_token"
    if settings.admin_token:
        where, export = "TB_ADMIN_TOKEN, from your environment", f"export HOST={host}"
    elif new_token:
        where = f"{token}\n  (new: shown this once; kept in {kept}, readable by you only)"
        export = f"export TB_ADMIN_TOKEN=$(cat {kept}) HOST={host}"
    else:
        where, export = f"kept in {kept}", f"export TB_ADMIN_TOKEN=$(cat {kept}) HOST={host}"
    return f"""
CartPulse is serving on {host}

  Admin token: {where}

  {export}
  curl -X POST "$HOST/v0/events?name=ecommerce_events" -H "Authorization: Bearer $TB_ADMIN_TOKEN" \\
       -d '{{"event_time":"2024-05-01 10:15:00","event_type":"purchase","user_id":"u1","product_id":"p1","category":"shoes","price":59.9,"quantity":1,"session_id":"s1","country":"France"}}'
  curl "$HOST/v0/pipes/top_products.json?token=$TB_ADMIN_TOKEN"

Ctrl-C stops the API{'' if settings.database_url else ' and the embedded database'}.
"""


def cmd_run(settings: Settings, args) -> int:
    """Start the database, create storage, build the models, serve and refresh them
    (the scheduler, a child process); stop all on Ctrl-C."""
    from cartpulse.cli.preflight import check_port_free, hold_state_lock
    from cartpulse.ops import multiproc

    lock = hold_state_lock(settings.state_dir)  # noqa: F841 (held until this process exits)
    check_port_free(settings.bind_address, settings.port)
    token_file = settings.state_dir / "admin_token"
    new_token = not settings.admin_token and not token_file.exists()
    # Before `scheduler` imports prometheus_client: else each worker counts alone.
    settings = replace(settings, prometheus_multiproc_dir=multiproc.prepare(settings.prometheus_multiproc_dir))
    from cartpulse.cli import derivations
    from cartpulse.cli.stopping import build_models, dbt_protected  # out of the terminal's Ctrl-C
    from cartpulse.ops import scheduler

    server = None if settings.database_url else embedded.for_settings(settings)
    started_here = server is not None and not (server.initialized() and server.running())
    main_pid = os.getpid()  # gunicorn forks workers inside serve(): only we stop the database
    # SIGTERM behaves as Ctrl-C until gunicorn installs its own handlers.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    refresher = None
    try:
        url = database_url(settings, start=True)
        token = init(settings, url)
        build_models(settings, url, *derivations.derived_first(settings, url, ["run"], dbt_protected)[1:])
        derivations.report(settings)
        if settings.refresh_seconds > 0:
            refresher = scheduler.spawn(url)
        print(banner(settings, token, new_token), flush=True)
        serve(replace(settings, database_url=url))
    except KeyboardInterrupt:
        pass
    finally:
        if os.getpid() == main_pid:
            scheduler.terminate(refresher)  # before the database it refreshes stops
        if server is not None and started_here and os.getpid() == main_pid:
            print("stopping the embedded database…", flush=True)
            server.stop()
    return 0


def cmd_scheduler(settings: Settings, args) -> int:
    """Refresh every REFRESH_SECONDS until Ctrl-C/SIGTERM; with --once, one refresh
    (exit 1 if it failed) for cron, systemd timers and orchestrators."""
    import psycopg

    from cartpulse.ops.scheduler import Scheduler
    from cartpulse.storage.db import wait_until_reachable

    url = database_url(settings)
    refresher = Scheduler(settings, url)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.once:
            try:
                return 1 if refresher.run_once().status == "failed" else 0
            except psycopg.OperationalError as err:  # the database is away
                print(f"cartpulse scheduler --once: {err}", file=sys.stderr)
                return 1
        wait_until_reachable(url)
        refresher.run_forever(skip_first=args.skip_first, parent=args.parent)
    except KeyboardInterrupt:
        log.info("scheduler stopped")
    return 0


def cmd_import(settings: Settings, args) -> int:
    from pathlib import Path

    from cartpulse.cli.import_file import import_file

    return import_file(settings, database_url(settings), Path(args.file), args.name)


def cmd_generate(settings: Settings, args) -> int:
    from cartpulse.cli.generate import generate

    return generate(args.events, args.seed, args.rate, args.output, args.url,
                    args.token or settings.admin_token, live=args.live)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cartpulse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="the embedded PostgreSQL")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    rep = sub.add_parser("replica", help="a streaming replica of the embedded PostgreSQL (for READ_DATABASE_URLS)")
    rep.add_argument("action", choices=["start", "stop", "status", "url"])
    rep.add_argument("--name", default="replica1", help="its folder under the state folder (default replica1)")
    sub.add_parser("init", help="create storage and the admin token")
    sub.add_parser("env", help="the exports for plain dbt and psql: eval \"$(cartpulse env)\"")
    # These pass their arguments through untouched (options included) to dbt or psql.
    passthrough = {"build": "dbt run (extra arguments go to dbt)", "dbt": "run any dbt command",
                   "psql": "psql into the database (extra arguments go to psql)"}
    for name, helptext in passthrough.items():
        sub.add_parser(name, help=helptext, add_help=False)
    sub.add_parser("serve", help="serve the API (gunicorn)")
    sub.add_parser("run", help="db start + init + build + serve, with the scheduler")
    sched = sub.add_parser("scheduler", help="refresh the models every REFRESH_SECONDS (dbt run, freshness, VACUUM)")
    sched.add_argument("--once", action="store_true", help="one refresh, then exit (1 if it failed)")
    sched.add_argument("--skip-first", action="store_true", help=argparse.SUPPRESS)
    sched.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # stop when this process is gone
    imp = sub.add_parser("import", help="bulk-load a .csv, .ndjson or .parquet file (.gz allowed for CSV/NDJSON)")
    imp.add_argument("file")
    imp.add_argument("--name", default="ecommerce_events", help="the data source (default ecommerce_events)")
    gen = sub.add_parser("generate", help="synthetic events (deterministic with --seed) as NDJSON or POSTed")
    gen.add_argument("--events", type=int, required=True, help="how many events")
    gen.add_argument("--seed", type=int, default=42, help="the same seed gives the same events (default 42)")
    gen.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    gen.add_argument("--output", "-o", help="write NDJSON to this file (default: stdout)")
    gen.add_argument("--url", help="POST to this running server instead, e.g. http://127.0.0.1:8000")
    gen.add_argument("--token", help="token for --url (default: TB_ADMIN_TOKEN)")
    gen.add_argument("--live", action="store_true", help="stamp events with the current time (not reproducible)")
    token = sub.add_parser("token", help="create, list, refresh or delete API tokens")
    token_sub = token.add_subparsers(dest="action", required=True)
    create = token_sub.add_parser("create", help="a new token; prints it (shown this once)")
    create.add_argument("name")
    create.add_argument("--scope", action="append", required=True,
                        help="ADMIN, DATASOURCES:APPEND:<name>, DATASOURCES:READ:<name>, PIPES:READ:<pipe> (repeatable)")
    token_sub.add_parser("list", help="names and scopes (no secrets: only hashes are stored)")
    token_sub.add_parser("refresh", help="a new secret for a token; prints it").add_argument("name")
    token_sub.add_parser("delete", help="delete a token").add_argument("name")
    from cartpulse.cli import analyst, data_commands, tinybird_import

    analyst.add_parser(sub)
    data_commands.add_parsers(sub)
    tinybird_import.add_parser(sub)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in passthrough:
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
    else:
        args = parser.parse_args(argv)
    handlers = {"db": cmd_db, "replica": cmd_replica, "init": cmd_init, "build": lambda s, a: cmd_dbt(s, a, "run"), "dbt": cmd_dbt,
                "psql": cmd_psql, "env": cmd_env, "serve": cmd_serve, "run": cmd_run, "token": cmd_token,
                "scheduler": cmd_scheduler, "import": cmd_import, "generate": cmd_generate, "tinybird": tinybird_import.cmd_tinybird,
                "analyst": lambda settings, args: analyst.cmd_analyst(database_url(settings, start=True), args),
                "delete": lambda settings, args: data_commands.run(settings, database_url(settings, start=True), args),
                "truncate": lambda settings, args: data_commands.run(settings, database_url(settings, start=True), args),
                "erase": lambda settings, args: data_commands.run(settings, database_url(settings, start=True), args)}
    try:
        settings = Settings.from_env()
    except SettingError as err:  # names the variable: nothing has started yet
        print(f"cartpulse: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cartpulse.cli.preflight import Refused

    try:
        return handlers[args.command](settings, args) or 0
    except Refused as err:  # checked before anything started
        print(f"cartpulse {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
