"""A Tinybird project's ``tb test`` files, imported as data files and run against the service.

Tinybird keeps an endpoint's tests in ``tests/<endpoint>.yaml``: a YAML list of tests,
each ``name``, ``description``, ``parameters`` (a query string), ``expected_result``
(the rows, one JSON object per line; empty for none) and ``expected_http_status``.
``convert`` reads one into a data file of the project, ``tinybird_tests/<pipe>.yaml``,
with the parameters as a mapping and the rows parsed, so that what does not map is
refused at import, by name; ``run`` calls each test's pipe through the app and compares
status and rows (in order; numbers within 1e-9, relative; timestamps whatever their
spelling): ``cartpulse tinybird test`` prints a line per test and exits 1 when one fails.
Tinybird runs them on a fresh workspace holding the project's fixtures
(``fixtures/<data source>.ndjson`` or ``.csv``): the import copies each into
``tinybird_tests/fixtures/``, and ``cartpulse tinybird test --fixtures`` appends them to
their data sources first, so run it on a database that holds nothing else.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from urllib.parse import parse_qsl

import yaml

TESTS = Path("tinybird_tests")
_KEYS = {"name", "description", "parameters", "expected_result", "expected_http_status"}
_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.0+)?(?:Z|[+-]00:?00)?$")


class TestFileError(ValueError):
    """A test file, or one test of it, that does not map; the message names it."""


def convert(path: Path, pipe: str, params: dict) -> dict:
    """``tests/<endpoint>.yaml`` → the data file's content for the imported ``pipe``
    (whose declared parameters are ``params``)."""
    try:
        tests = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TestFileError(f"-: not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
        raise TestFileError("-: a test file is a YAML list of tests (name, parameters, expected_result)")
    out = []
    for test in tests:
        name = test.get("name")
        if not isinstance(name, str) or not name:
            raise TestFileError("-: name: each test has one")
        unknown = sorted(set(test) - _KEYS)
        if unknown:
            raise TestFileError(f"{name}: {', '.join(unknown)}: not a field of a Tinybird test")
        given: dict[str, object] = {}
        for key, value in parse_qsl(str(test.get("parameters") or ""), keep_blank_values=True, strict_parsing=False):
            if key not in params:
                raise TestFileError(f"{name}: parameter {key}: the pipe {pipe} declares no such parameter")
            if key in given:
                given[key] = [*given[key], value] if isinstance(given[key], list) else [given[key], value]
            else:
                given[key] = value
        rows = []
        for line in str(test.get("expected_result") or "").splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    raise TestFileError(f"{name}: expected_result: a line that is not JSON ({line[:60]!r})") from None
                if not isinstance(row, dict):
                    raise TestFileError(f"{name}: expected_result: a line that is not one row (a JSON object)")
                rows.append(row)
        status = test.get("expected_http_status", 200)
        if not isinstance(status, int):
            raise TestFileError(f"{name}: expected_http_status: a number")
        out.append({"name": name, "description": str(test.get("description") or ""), "params": given,
                    "status": status, "rows": rows})
    return {"pipe": pipe, "source": path.name, "tests": out}


def plan(folder: Path, imported: dict[str, tuple[str, dict]], sources: dict[str, str], files: dict, made: list,
         refused: list) -> None:
    """Each ``tests/<pipe>.yaml`` under ``folder`` as a data file in ``files``, and each
    ``fixtures/<data source>.ndjson|.csv`` as a copy; ``imported``: each imported pipe's
    file name → (its name, its declared parameters); ``sources``: data source file names
    → imported names."""
    for path in sorted(folder.glob("fixtures/*")):
        rel, name = path.relative_to(folder), sources.get(path.stem)
        if path.suffix not in (".ndjson", ".csv") or name is None:
            refused.append(f"refused: {rel}: -: a fixture is <data source>.ndjson or .csv of a data source this import made")
            continue
        files[TESTS / "fixtures" / f"{name}{path.suffix}"] = path.read_text()
        made.append(f"{rel}: fixture of {name} ({TESTS}/fixtures/: cartpulse tinybird test --fixtures)")
    for path in sorted(p for p in folder.rglob("*.y*ml") if "tests" in p.relative_to(folder).parts[:-1]):
        rel = path.relative_to(folder)
        pipe = imported.get(path.stem)
        if pipe is None:
            refused.append(f"refused: {rel}: -: tests of {path.stem}, a pipe this import did not make (refused, or none)")
            continue
        try:
            data = convert(path, *pipe)
        except TestFileError as err:
            refused.append(f"refused: {rel}: test {err}")
            continue
        files[TESTS / f"{pipe[0]}.yaml"] = (f"# Generated by `cartpulse tinybird import` from {rel}; run by `cartpulse "
                                            "tinybird test`; yours to edit.\n" + yaml.safe_dump(data, sort_keys=False))
        made.append(f"{rel}: {len(data['tests'])} tests of {pipe[0]} ({TESTS}/{pipe[0]}.yaml: cartpulse tinybird test)")


def _same(got, want) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return got == want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(want, str) and isinstance(got, (int, float)) and re.fullmatch(r"-?\d+(\.\d+)?", want):
        return _same(got, float(want))  # ClickHouse may quote 64-bit integers
    if isinstance(want, str) and isinstance(got, str):
        a, b = _TIME.match(got), _TIME.match(want)
        return a.groups() == b.groups() if a and b else got == want
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    return got == want


def _check(client, auth: dict, pipe: str, test: dict) -> str | None:
    """None when the test passes, else what differed."""
    query = [(k, ",".join(v) if isinstance(v, list) else v) for k, v in test["params"].items()]
    r = client.get(f"/v0/pipes/{pipe}.json", query_string=query, headers=auth)
    if r.status_code != test["status"]:
        return f"status {r.status_code}, expected {test['status']}: {r.get_data(as_text=True)[:200]}"
    if r.status_code != 200:
        return None
    rows = r.get_json()["data"]
    if len(rows) != len(test["rows"]):
        return f"{len(rows)} rows, expected {len(test['rows'])}"
    for i, (got, want) in enumerate(zip(rows, test["rows"])):
        if set(got) != set(want) or not all(_same(got[k], want[k]) for k in want):
            return f"row {i + 1}: {json.dumps(got, default=str)[:200]}, expected {json.dumps(want)[:200]}"
    return None


def load_fixtures(client, auth: dict, folder: Path, out=print) -> bool:
    """Append each fixture under ``folder``/fixtures to its data source; False when one failed."""
    for path in sorted((folder / "fixtures").glob("*")):
        r = client.post(f"/v0/datasources?name={path.stem}&mode=append&format={path.suffix[1:]}", data=path.read_bytes(),
                        headers=auth)
        body = r.get_json() or {}
        if r.status_code not in (200, 202) or body.get("quarantined_rows"):
            out(f"FAILED fixture {path.name}: {r.status_code} {json.dumps(body)[:200]}")
            return False
        out(f"loaded {body['successful_rows']} rows into {path.stem} from {TESTS}/fixtures/{path.name}")
    return True


def run(client, auth: dict, folder: Path, out=print) -> int:
    """Run every data file under ``folder`` (``tinybird_tests/``); 0 when all pass."""
    failed = total = 0
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        for test in data["tests"]:
            total += 1
            why = _check(client, auth, data["pipe"], test)
            failed += why is not None
            out(f"{'passed' if why is None else 'FAILED'} {data['pipe']}: {test['name']}" + (f": {why}" if why else ""))
    out(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_test(settings, args) -> int:
    """``cartpulse tinybird test``: the imported tests, against the configured database."""
    from cartpulse.app import create_app

    folder = Path(settings.project_dir) / TESTS
    if not folder.is_dir():
        print(f"cartpulse tinybird test: no {TESTS}/ (import a Tinybird project with tests/*.yaml first)")
        return 2
    kept = Path(settings.state_dir) / "admin_token"
    token = settings.admin_token or (kept.read_text().strip() if kept.exists() else "")
    app = create_app(settings)
    client, auth = app.test_client(), {"Authorization": f"Bearer {token}"}
    try:
        if getattr(args, "fixtures", False) and not load_fixtures(client, auth, folder):
            return 1
        return run(client, auth, folder)
    finally:
        app.extensions["cartpulse_stats"].flush()
        app.extensions["cartpulse"].db.dispose()
