"""Endpoint declarations, read from the dbt project's manifest.

A model is served as ``/v0/pipes/<name>.<format>`` when its yml marks it
``config: {meta: {endpoint: ...}}``. Nothing here lists pipes by name: adding an
endpoint is adding a model file and its yml entry, then ``dbt run`` (or ``dbt parse``).
The manifest is re-read when dbt rewrites it, so a running service picks new endpoints
up without a restart.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cartpulse.project.params import Param


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


def endpoints_from_manifest(manifest: dict) -> dict[str, Endpoint]:
    endpoints = {}
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") != "model":
            continue
        meta = {**node.get("meta", {}), **node.get("config", {}).get("meta", {})}
        declared = meta.get("endpoint")
        if declared is None or declared is False:
            continue
        endpoints[node["name"]] = Endpoint(
            name=node["name"],
            schema=node["schema"],
            relation=node.get("alias") or node["name"],
            description=node.get("description", ""),
            columns=tuple(Column(c["name"], c.get("description", ""), c.get("data_type"))
                          for c in node.get("columns", {}).values()),
            params=tuple(Param.declared(name, spec or {})
                         for name, spec in (declared.get("params") or {}).items()) if isinstance(declared, dict) else (),
            sql=node.get("raw_code") or "",
            depends_on=tuple(dict.fromkeys(d.rpartition(".")[2] for d in node.get("depends_on", {}).get("nodes", []))),
            created_at=node.get("created_at"),
        )
    return endpoints


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
                        self._endpoints = endpoints_from_manifest(json.load(fh))
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
