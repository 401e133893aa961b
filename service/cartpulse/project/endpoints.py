"""Endpoint declarations, read from the dbt project's manifest.

A model is served as ``/v0/pipes/<name>.<format>`` when its yml marks it
``config: {meta: {endpoint: ...}}``. Nothing here lists pipes by name: adding an
endpoint is adding a model file and its yml entry, then ``dbt run`` (or ``dbt parse``).
The manifest is re-read when dbt rewrites it, so a running service picks new endpoints
up without a restart.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cartpulse.project.derivation import Derivation, Refused, StagingModel, recognize
from cartpulse.project.derived_models import sql_sha
from cartpulse.project.params import Param
from cartpulse.project.rollup_plans import RollupPlan, plan


@dataclass(frozen=True)
class Column:
    name: str
    description: str = ""
    data_type: str | None = None


@dataclass(frozen=True)
class Endpoint:
    name: str
    schema: str
    relation: str  # identifier of the built relation, from dbt (never from a request)
    description: str = ""
    columns: tuple[Column, ...] = ()
    params: tuple[Param, ...] = ()
    #: The model's SQL as written (dbt Jinja), what it reads (models and sources, by
    #: name) and when dbt parsed it (epoch seconds): pipe metadata (``/v0/pipes/<name>``).
    sql: str = ""
    depends_on: tuple[str, ...] = ()
    created_at: float | None = None
    #: Whether its SQL is in the class answered from derived rollups (project/derivation.py):
    #: the derivation and its rollups, or why it is served as written.
    derivation: Derivation | None = None
    rollups: tuple[RollupPlan, ...] = ()
    as_written: str | None = None
    #: The function that answers from the derived rollups, when one was built from the
    #: SQL the endpoint has now (ops/derive.py); None: the endpoint's own function answers.
    answer: str | None = None

    @property
    def function(self) -> str:
        """The function a read calls."""
        return self.answer or self.relation


def staging_models(manifest: dict) -> dict[str, StagingModel]:
    """The models that read a data source directly (its staging model), by name."""
    datasources = {}
    for unique_id, source in manifest.get("sources", {}).items():
        declared = {**source.get("meta", {}), **source.get("config", {}).get("meta", {})}.get("datasource")
        if isinstance(declared, dict) and declared.get("partition_key"):
            datasources[unique_id] = (source["name"], declared["partition_key"],
                                      tuple(source.get("columns", {})))
    names = {node["name"] for node in manifest.get("nodes", {}).values() if node.get("resource_type") == "model"}
    models = {}
    for node in manifest.get("nodes", {}).values():
        reads = [datasources[d] for d in node.get("depends_on", {}).get("nodes", []) if d in datasources]
        if node.get("resource_type") == "model" and len(reads) == 1:
            name, time_column, columns = reads[0]
            pending = node["name"] + "_pending"
            models[node["name"]] = StagingModel(node["name"], name, time_column, tuple(node.get("columns", {})) or columns,
                                                pending if pending in names else None)
    return models


def compiled_sql(node: dict, target_dir: Path | None) -> str | None:
    """The endpoint's SQL as dbt last compiled it (what its function was built from):
    ``target/compiled/<package>/<path>``, which dbt keeps across runs that select other
    models (the manifest keeps a node's compiled code only in the run that compiled it)."""
    if node.get("compiled_code"):
        return node["compiled_code"]
    if target_dir is None:
        return None
    path = target_dir / "compiled" / node.get("package_name", "") / node.get("original_file_path", "")
    try:
        return path.read_text()
    except OSError:
        return None


def _recognized(node: dict, params: tuple[Param, ...], staging: dict, target_dir: Path | None):
    sql = compiled_sql(node, target_dir)
    if sql is None:
        return None, "not compiled yet (run `cartpulse build`)"
    try:
        return recognize(sql, {p.name: p for p in params}, staging), None
    except Refused as refusal:
        return None, str(refusal)


def _answers(manifest: dict) -> dict[str, tuple[str, str]]:
    """The derived answers (ops/derive.py) by the endpoint they answer: (relation, the
    hash of the SQL they were derived from)."""
    answers = {}
    for node in manifest.get("nodes", {}).values():
        meta = {**node.get("meta", {}), **node.get("config", {}).get("meta", {})}
        if node.get("resource_type") == "model" and meta.get("derived_of"):
            answers[meta["derived_of"]] = (node.get("alias") or node["name"], meta.get("sql_sha"))
    return answers


def _current_answer(answer: tuple[str, str] | None, sql: str | None) -> str | None:
    return answer[0] if answer and sql is not None and answer[1] == sql_sha(sql) else None


def endpoints_from_manifest(manifest: dict, target_dir: Path | None = None) -> dict[str, Endpoint]:
    """Every endpoint model of ``manifest``; ``target_dir`` (dbt's target folder) is where
    their compiled SQL is read from, for recognizing the derived ones."""
    staging = staging_models(manifest)
    answers = _answers(manifest)
    endpoints = {}
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") != "model":
            continue
        meta = {**node.get("meta", {}), **node.get("config", {}).get("meta", {})}
        declared = meta.get("endpoint")
        if declared is None or declared is False or meta.get("derived_of") or meta.get("merged_of"):
            continue
        params = tuple(Param.declared(name, spec or {})
                       for name, spec in (declared.get("params") or {}).items()) if isinstance(declared, dict) else ()
        derivation, as_written = _recognized(node, params, staging, target_dir)
        endpoints[node["name"]] = Endpoint(
            name=node["name"],
            schema=node["schema"],
            relation=node.get("alias") or node["name"],
            description=node.get("description", ""),
            columns=tuple(Column(c["name"], c.get("description", ""), c.get("data_type"))
                          for c in node.get("columns", {}).values()),
            params=params,
            sql=node.get("raw_code") or "",
            depends_on=tuple(dict.fromkeys(d.rpartition(".")[2] for d in node.get("depends_on", {}).get("nodes", []))),
            created_at=node.get("created_at"),
            derivation=derivation,
            as_written=as_written,
            answer=_current_answer(answers.get(node["name"]), compiled_sql(node, target_dir)) if derivation else None,
        )
    served, rollups = plan({name: e.derivation for name, e in endpoints.items() if e.derivation is not None})
    return {name: dataclasses.replace(e, rollups=tuple(rollups[r] for r in served.get(name, ())))
            for name, e in endpoints.items()}


class Catalog:
    """The current set of endpoints, reloaded when ``manifest.json`` changes."""

    def __init__(self, manifest_path: Path, check_every: float = 1.0):
        self.path = manifest_path
        self.check_every = check_every
        self._endpoints: dict[str, Endpoint] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_every and self._mtime is not None and not force:
            return
        with self._lock:
            self._checked = now
            try:
                mtime = os.stat(self.path).st_mtime
            except FileNotFoundError:
                self._endpoints, self._mtime = {}, None
                return
            if mtime != self._mtime:
                try:
                    with open(self.path) as fh:
                        self._endpoints = endpoints_from_manifest(json.load(fh), self.path.parent)
                except ValueError:
                    return  # dbt is still writing it: keep what we had, look again soon
                self._mtime = mtime

    @property
    def built(self) -> bool:
        self._refresh()
        return self._mtime is not None

    def get(self, name: str) -> Endpoint | None:
        self._refresh()
        if name not in self._endpoints:  # just built? `dbt run; curl` must not get a 404 for a second
            self._refresh(force=True)
        return self._endpoints.get(name)

    def all(self) -> dict[str, Endpoint]:
        self._refresh()
        return dict(self._endpoints)
