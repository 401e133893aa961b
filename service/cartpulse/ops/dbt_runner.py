"""Running dbt against the database CartPulse uses.

dbt reads its connection from ``profiles/profiles.yml``, which takes libpq's ``PG*``
environment variables; this module derives them from the one ``DATABASE_URL`` so that
the service, ``cartpulse dbt …`` and a scheduled ``dbt run`` all hit the same database.
The schemas come from the settings the same way: ``DBT_SCHEMA`` (the models) and
``RAW_SCHEMA`` (the data sources, dbt_project.yml's ``raw_schema`` var).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

_LIBPQ_ENV = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
              "dbname": "PGDATABASE", "sslmode": "PGSSLMODE"}


def dbt_variables(settings, url: str) -> dict[str, str]:
    """What dbt needs to reach CartPulse's database and project: libpq's ``PG*`` from the
    URL, the schemas, and where dbt's project, profile and target are. ``cartpulse env``
    prints them, so that plain ``dbt`` (an analyst's shell, cron) runs as CartPulse does."""
    variables = {_LIBPQ_ENV[key]: str(value) for key, value in conninfo_to_dict(url).items()
                 if key in _LIBPQ_ENV and value is not None}
    variables.update(
        DBT_SCHEMA=settings.dbt_schema,
        RAW_SCHEMA=settings.raw_schema,  # the sources yml reads it: where the data sources are
        DBT_TARGET_PATH=str(settings.target_dir),
        DBT_LOG_PATH=str(settings.target_dir / "logs"),
        DBT_PROFILES_DIR=str(settings.project_dir / "profiles"),
        DBT_PROJECT_DIR=str(settings.project_dir),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    return variables


def dbt_env(settings, url: str) -> dict[str, str]:
    """This process's environment with ``dbt_variables`` on top: how CartPulse runs dbt."""
    return {**os.environ, **dbt_variables(settings, url)}


def dbt_executable() -> str:
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def run_dbt(settings, url: str, *args: str, check: bool = True, capture: bool = False):
    """Run ``dbt <args>`` in the project; raise CalledProcessError when ``check`` and it fails."""
    return subprocess.run([dbt_executable(), *args], cwd=settings.project_dir, env=dbt_env(settings, url),
                          check=check, text=True, capture_output=capture)
