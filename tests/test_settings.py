"""Every setting is read in config.py, documented in the README's one table, and used.

The README's Configuration table is the users' list of knobs, ``config.Settings`` the
code's: these tests keep them one list with the same defaults, check that a bad value
stops the start naming its variable, and that no other module reads the environment.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import psycopg
import pytest

from cartpulse import config
from cartpulse.config import PROJECT_DIR, SettingError, Settings

SERVICE = PROJECT_DIR / "service" / "cartpulse"


def configuration_table() -> dict[str, str]:
    """Variable -> its default cell, for each row of the README's Configuration table.
    A row may name several variables (`A` / `B`), its defaults split the same way."""
    section = (PROJECT_DIR / "README.md").read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first, default = [cell.strip() for cell in line.strip("| ").split(" | ")][:2]
        names = re.findall(r"`([^`]+)`", first)
        assert first == " / ".join(f"`{n}`" for n in names), f"not a row of settings: {first}"
        defaults = default.split(" / ") if len(names) > 1 else [default]
        assert len(defaults) == len(names), line
        table.update(zip(names, defaults))
    return table


class Recorder(Mapping):
    """An empty environment that remembers every variable asked for."""

    def __init__(self):
        self.asked: set[str] = set()

    def __getitem__(self, key):
        self.asked.add(key)
        raise KeyError(key)

    def __contains__(self, key):
        self.asked.add(key)
        return False

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def test_the_readme_table_lists_every_setting_and_only_settings():
    environ = Recorder()
    Settings.from_env(environ)
    documented = set(configuration_table())
    assert environ.asked - documented == set(), "read by Settings.from_env, missing from the README's table"
    assert documented - environ.asked == set(), "in the README's table, never read by Settings.from_env"
    assert set(Settings.variables()) == environ.asked


def test_the_readme_table_gives_the_defaults_of_the_code():
    """Defaults that are plain values must read the same; unset (None), folders and
    lists are described in words."""
    table = configuration_table()
    by_field = {f.name: f.default for f in fields(Settings)}
    for variable, name in Settings.variables().items():
        default = by_field[name]
        if isinstance(default, (int, float, str)):
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert table[variable] == f"`{shown}`", variable


def test_no_module_but_config_reads_the_environment():
    """Building a child's environment (dict(os.environ), {**os.environ}) and exporting
    PROMETHEUS_MULTIPROC_DIR for prometheus_client (a write) are not reads."""
    read = re.compile(r"os\.getenv|os\.environ\.get|os\.environ\[[^]]+\](?!\s*=)|environ\.copy")
    offenders = [f"{path.relative_to(SERVICE)}:{n}: {line.strip()}"
                 for path in SERVICE.rglob("*.py") if path.name != "config.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if read.search(line)]
    assert offenders == []


def test_every_setting_is_used():
    code = "\n".join(p.read_text() for p in SERVICE.rglob("*.py") if p.name != "config.py")
    unused = [f.name for f in fields(Settings) if not re.search(rf"\.{f.name}\b", code)]
    assert unused == []


@pytest.mark.parametrize("variable, value", [
    ("PORT", "eighty"), ("PORT", "70000"), ("WEB_WORKERS", "0"), ("RATE_LIMIT_RPS", "nan"),
    ("MAX_ROWS_PER_REQUEST", "many"), ("REPLICA_MAX_LAG_SECONDS", "-1"), ("RETENTION", "a fortnight"),
    ("CHUNK_INTERVAL", "0 days"), ("COMPRESS_AFTER", "-7 days"), ("RETENTION", "1day2hours"),
    ("CARTPULSE_ENGINE", "mysql"), ("LOG_LEVEL", "loud"), ("BIND_ADDRESS", "http://127.0.0.1:8000"),
    ("BIND_ADDRESS", "127.0.0.1:8000"),
])
def test_a_bad_value_stops_the_start_naming_the_variable(variable, value):
    with pytest.raises(SettingError, match=rf"^{variable}="):
        Settings.from_env({variable: value})


def test_the_command_says_which_variable_is_wrong():
    """Before anything starts: exit 2, the variable and its value on stderr, no traceback."""
    done = subprocess.run([str(Path(sys.executable).parent / "cartpulse"), "db", "url"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PORT": "eighty"}, timeout=60)
    assert done.returncode == 2
    assert "PORT='eighty'" in done.stderr and "Traceback" not in done.stderr


def test_the_url_exported_as_HOST_does_not_change_the_bind_address():
    """The README's tour exports HOST=http://127.0.0.1:8000; `make run` in that shell
    must still listen on 127.0.0.1 (it used to bind to 'http://127.0.0.1:8000:8000')."""
    assert "HOST" not in Settings.variables()
    assert Settings.from_env({"HOST": "http://127.0.0.1:8000"}).bind_address == "127.0.0.1"
    assert Settings.from_env({"HOST": "http://127.0.0.1:8000", "BIND_ADDRESS": "0.0.0.0"}).bind_address == "0.0.0.0"


def test_empty_means_unset():
    settings = Settings.from_env({"PORT": "", "DATABASE_URL": " ", "RETENTION": ""})
    assert (settings.port, settings.database_url, settings.retention) == (8000, None, None)


def test_the_state_and_target_folders_follow_the_project(tmp_path):
    settings = Settings.from_env({"CARTPULSE_PROJECT_DIR": str(tmp_path)})
    assert (settings.state_dir, settings.target_dir) == (tmp_path / ".cartpulse", tmp_path / "target")


def test_every_interval_the_settings_accept_the_server_reads_as_positive(database_url):
    """config.interval checks a subset of PostgreSQL's syntax at start, so the server
    must take whatever it lets through: each unit spelling, pairs and a clock part."""
    samples = [f"2 {unit}" for unit in config._UNITS] + [
        "7days", "1 year 6 months", "1.5 days", "1 day 02:00", "01:30:00", "0 days 00:00:01", "12H"]
    with psycopg.connect(database_url) as conn:
        for sample in samples:
            value = Settings.from_env({"RETENTION": sample}).retention
            assert conn.execute("select %s::interval > interval '0'", [value]).fetchone()[0], sample
