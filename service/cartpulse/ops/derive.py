"""Deriving rollups from the endpoints' SQL, before each build (docs/realtime.md, "Derived endpoints").

``cartpulse build``, ``cartpulse dbt run|build`` and ``cartpulse run`` call ``derive``
before dbt runs: it compiles the endpoints (dbt compile: the SQL their functions are
built from), recognizes the derivable ones (project/derivation.py), plans their rollups
(project/rollup_plans.py) and writes the models that build and answer from them
(project/derived_models.py): the rollups into ``models/rollups/derived/``, the answers
into ``models/marts/derived/``, so that each takes its folder's materialization and
``--select rollups`` still selects every rollup. Both folders hold generated files only,
which git ignores: the author writes only the endpoint. The plain types of the endpoint's
aggregates and dimensions are asked of PostgreSQL itself (a ``where false`` query over
the staging model's compiled SQL), so that each merge returns what the plain SQL would.

A generated answer records the hash of the SQL it was derived from; the service answers
from it only while the endpoint's compiled SQL still has that hash (project/endpoints.py),
so an endpoint changed and built by plain ``dbt run`` is served as written until the next
derivation, never from rollups of its old SQL.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import psycopg
import yaml

from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.project import derived_models, merged_answers
from cartpulse.project.endpoints import compiled_sql, endpoints_from_manifest
from cartpulse.project.rollup_plans import plan

log = logging.getLogger(__name__)
#: Where the generated rollups and answers go (each beside the models of its kind).
ROLLUPS, ANSWERS = Path("models") / "rollups" / "derived", Path("models") / "marts" / "derived"
FOLDERS = (ROLLUPS, ANSWERS)
YML = "_derived.yml"


def _describe(conn, staging_sql: str, expressions: list[str]) -> list[str]:
    """The SQL types of ``expressions`` over the staging model's rows."""
    if not expressions:
        return []
    cur = conn.execute(f"select {', '.join(expressions)} from ({staging_sql}) as staged where false")
    oids = [d.type_code for d in cur.description]
    names = dict(conn.execute("select oid::int, format_type(oid, null) from pg_type where oid = any(%s)",
                              [oids]).fetchall())
    return [names[o] for o in oids]


def _types(conn, staging_sql: str, derivation, sql: str) -> tuple[dict, dict]:
    """(column types of the dimensions, plain result type of each sum/avg call)."""
    dims, calls = list(derivation.dimensions), derived_models.aggregates(sql)
    return (dict(zip(dims, _describe(conn, staging_sql, dims))),
            dict(zip(calls, _describe(conn, staging_sql, calls))))


def _write(folder: Path, files: dict[str, str]) -> list[str]:
    """Write ``files`` into ``folder``; delete generated files no longer planned. Returns
    the names changed, so that a build with nothing new rewrites nothing."""
    if not files and not folder.is_dir():
        return []
    folder.mkdir(parents=True, exist_ok=True)
    changed = []
    for path in folder.iterdir():
        if path.name not in files and derived_models.MARK in _head(path):
            path.unlink()
            changed.append(path.name)
    for name, text in files.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(name)
    return changed


def _forget_other_forms(folder: Path) -> None:
    """Delete the files an older CartPulse generated in another form: dbt parses every
    model, excluded or not, so one that no longer parses would stop the compile that
    derives their replacements. Until that build, the endpoints are served as written."""
    if not folder.is_dir():
        return
    ours = {path: head for path in folder.iterdir() if derived_models.MARK in (head := _head(path))}
    if any(derived_models.HEADER.lstrip("- ") not in head for head in ours.values()):
        for path in ours:
            path.unlink()
        log.info("derived models of an older form removed from %s", folder)


def _head(path: Path) -> str:
    """The start of a file, where a generated one carries its mark and header ('' for a folder)."""
    return path.read_text()[:300] if path.is_file() else ""


def derive(settings, url: str, dbt=None) -> dict[str, str]:
    """Compile, recognize and write the derived models; return, per derivable endpoint
    that could not be derived after all, why (its types could not be described). ``dbt``
    runs dbt (``cartpulse run`` passes its Ctrl-C-proof runner, cli/stopping.py)."""
    args = ["compile", "--quiet", "--select", "+config.materialized:endpoint"]
    for folder in FOLDERS:
        _forget_other_forms(settings.project_dir / folder)
        if (settings.project_dir / folder).is_dir():
            args += ["--exclude", f"path:{folder}"]
    (dbt or run_dbt)(settings, url, *args)
    target = settings.target_dir
    manifest = json.loads((target / "manifest.json").read_text())
    nodes = {n["name"]: n for n in manifest["nodes"].values() if n.get("resource_type") == "model"}
    endpoints = {name: e for name, e in endpoints_from_manifest(manifest, target).items() if e.derivation is not None}
    files: dict[Path, dict[str, str]] = {ROLLUPS: {}, ANSWERS: {}}
    yml: dict[Path, list[dict]] = {ROLLUPS: [], ANSWERS: []}
    failed: dict[str, str] = {}
    types: dict[str, tuple[dict, dict]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, endpoint in endpoints.items():
            staging_sql = compiled_sql(nodes[endpoint.derivation.staging.name], target)
            try:
                types[name] = _types(conn, staging_sql, endpoint.derivation, compiled_sql(nodes[name], target))
            except psycopg.Error as err:
                failed[name] = f"its aggregates' types: {str(err).splitlines()[0]}"
    derivations = {name: e.derivation for name, e in endpoints.items() if name in types}
    served, rollups = plan(derivations)
    for rollup in rollups.values():
        users = sorted(n for n, names in served.items() if rollup.name in names)
        column_types = {k: v for n in users for k, v in types[n][0].items()}
        time_column = derivations[users[0]].staging.time_column
        files[ROLLUPS][f"{rollup.name}.sql"] = derived_models.rollup_model(rollup, time_column)
        yml[ROLLUPS].append(derived_models.rollup_yml(rollup, time_column, column_types, users))
    for name, derivation in derivations.items():
        node, sql = nodes[name], compiled_sql(nodes[name], target)
        answer, param_names = f"{name}__derived", [p.name for p in endpoints[name].params]
        declared = {"params": node["config"]["meta"]["endpoint"].get("params") or {}}
        columns = [{"name": c["name"], "data_type": c["data_type"]} for c in node["columns"].values()]
        files[ANSWERS][f"{answer}.sql"] = derived_models.answer_model(sql, derivation, rollups, param_names, types[name][1])
        meta = {"endpoint": declared, "derived_of": name, "sql_sha": derived_models.sql_sha(sql)}
        fast = merged_answers.fast_answers(sql, derivation, rollups, param_names, types[name][1])
        for i, (when, text) in enumerate(fast):
            merged = f"{name}{merged_answers.SUFFIX}{i or ''}"
            files[ANSWERS][f"{merged}.sql"] = text
            yml[ANSWERS].append({"name": merged, "description": f"A fast path of {answer}.",
                                 "config": {"meta": {"endpoint": declared, "merged_of": name}}, "columns": columns})
            meta.setdefault("fast_paths", []).append({"when": when, "model": merged})
        yml[ANSWERS].append({"name": answer, "description": f"The answer of {name} from its derived rollups.",
                             "config": {"meta": meta}, "columns": columns})
    changed = []
    for folder in FOLDERS:
        if files[folder]:
            files[folder][YML] = "# " + derived_models.HEADER.lstrip("- ") + "\n" + yaml.safe_dump(
                {"version": 2, "models": yml[folder]}, sort_keys=False, allow_unicode=True)
        changed += _write(settings.project_dir / folder, files[folder])
    if changed:
        log.info("derived models written: %s", ", ".join(sorted(changed)))
    return failed
