"""A full disk during ingest: the database's files on a small tmpfs (a tablespace, so the
WAL stays on the server's own disk: PostgreSQL stops, by design, when it cannot write its
WAL). Ingest answers 507 and acknowledges nothing it did not store; once space is freed,
the same process stores the same batch, once. Only as root (mount), on the tests' own
embedded server."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from dataclasses import replace

import psycopg
import pytest
from cartpulse.access.auth import ensure_admin_token
from cartpulse.config import Settings
from cartpulse.storage.embedded import SERVER_USER
from cartpulse.storage.schema import create_storage
from psycopg.conninfo import make_conninfo
from support import EVENT, POST, app_with, count, ndjson, server_folder

BATCH = 2000


@pytest.fixture
def small_disk():
    """A 96 MiB tmpfs the embedded server's user owns; skipped (saying why) where it cannot be."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    with server_folder("cartpulse-disk-") as folder:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(folder)], capture_output=True, text=True, check=False)
        if mounted.returncode != 0:
            pytest.skip(f"mount is not permitted here: {mounted.stderr.strip()}")
        try:
            entry = pwd.getpwnam(SERVER_USER)
            space = folder / "space"
            space.mkdir(mode=0o700)
            os.chown(space, entry.pw_uid, entry.pw_gid)
            os.chmod(folder, 0o755)
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(path) -> None:
    """Write a file until the device is full (root's writes count against a tmpfs's size)."""
    with open(path, "wb", buffering=0) as filler:
        for size in (1 << 20, 4096):
            try:
                while True:
                    filler.write(b"\0" * size)
            except OSError:
                pass


def _batch(n: int) -> bytes:
    return ndjson([{**EVENT, "user_id": f"disk-{n}-{i}", "session_id": "x" * 200} for i in range(BATCH)])


def test_a_full_disk_is_507_nothing_lost_and_ingest_recovers(own_server, built, small_disk, tmp_path):
    name = f"cartpulse_disk_{secrets.token_hex(4)}"
    admin = own_server.admin_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"create tablespace {name} location '{small_disk / 'space'}'")
        conn.execute(f'create database "{name}" tablespace {name}')
    url = make_conninfo(admin, dbname=name)
    try:
        settings = replace(built, database_url=url, state_dir=tmp_path)
        create_storage(url, Settings.from_env(database_url=url))
        token = ensure_admin_token(url, tmp_path, built.admin_token)
        auth = {"Authorization": f"Bearer {token}"}
        with app_with(settings) as app:
            client = app.test_client()
            assert client.post(POST, data=_batch(0), headers={**auth, "Idempotency-Key": "disk-0"}).status_code in (200, 202)
            _fill(small_disk / "filler")
            acknowledged, refused = BATCH, None
            for n in range(1, 40):  # the free pages left in the files take a few batches
                r = client.post(POST, data=_batch(n), headers={**auth, "Idempotency-Key": f"disk-{n}"})
                if r.status_code in (200, 202):
                    acknowledged += BATCH
                    continue
                assert r.status_code == 507, r.get_data(as_text=True)
                assert "disk space" in r.get_json()["error"] and int(r.headers["Retry-After"]) >= 1
                refused = n
                break
            assert refused is not None, "the disk never filled"
            assert count(url) == acknowledged  # every acknowledged row stored, none of the refused batch
            (small_disk / "filler").unlink()  # space freed: the same process, no restart
            r = client.post(POST, data=_batch(refused), headers={**auth, "Idempotency-Key": f"disk-{refused}"})
            assert r.status_code in (200, 202), r.get_data(as_text=True)
            assert count(url) == acknowledged + BATCH
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
            conn.execute(f"drop tablespace if exists {name}")
