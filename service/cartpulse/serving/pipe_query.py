"""SQL over a pipe's result: ``q=`` on ``/v0/pipes/<name>.<format>``, and the Query API's core.

``/v0/pipes/top_products.json?country=US&q=select count() from _`` runs the pipe with its
parameters (validated as for any call) and the statement over its rows, the table ``_``;
clients page through a pipe this way (``q=select * from _ limit 100 offset 200``). The
statement is checked and translated like the Query API's (``sql_dialect.py``), runs with
the same limits (``sql_query.py``), and may also name the data sources and other pipes
the token may read. The answer is written as the pipe's own answer is, in the URL's
format (``render.py``); a ``FORMAT`` clause in ``q`` is refused rather than ignored.

``serving/pipes.py`` calls ``answer_over_pipe`` when a request carries ``q``; it passes
its own ``endpoint_query`` (the query of a pipe), which this module cannot import
without making the two modules import each other.
"""

from __future__ import annotations

from collections.abc import Callable

from cartpulse.access.auth import request_caller
from cartpulse.context import request_state, service
from cartpulse.errors import ApiError
from cartpulse.serving import sql_query
from cartpulse.serving.render import render
from cartpulse.serving.sql_dialect import THIS_CTE, Compiled, compile_sql


def run(text: str, this: tuple | None, pipe_sql: Callable, on_pipe: bool = False) -> tuple[Compiled, list, list, dict]:
    """Check, authorize and run one statement: (compiled, meta, rows, statistics).
    ``this``: (endpoint, values) of the pipe read as ``_``."""
    state = service()
    compiled = compile_sql(text, sql_query.tables(state, this=this is not None))
    if on_pipe and compiled.format is not None:
        raise ApiError(400, "a FORMAT clause in q= on a pipe: the URL's extension sets the format",
                       construct="FORMAT")
    caller = request_caller()
    sql_query.authorize(compiled.refs, caller.scopes)
    pipes = {THIS_CTE: this} if this is not None and any(r.kind == "this" for r in compiled.refs) else {}
    catalog = state.catalog
    for ref in compiled.refs:
        if ref.kind == "pipe":
            endpoint = catalog.get(ref.name)
            if endpoint is None:  # gone since the statement was checked
                raise ApiError(404, f"pipe '{ref.name}' not found")
            pipes[f"__pipe_{ref.name}"] = (endpoint, sql_query.pipe_values(endpoint, caller.fixed_params.get(ref.name)))
    meta, rows, statistics = sql_query.execute(state, compiled, pipes, pipe_sql)
    request_state().pipe_result = (len(rows), statistics)
    return compiled, meta, rows, statistics


def answer_over_pipe(endpoint, values: dict, fmt: str, text: str, pipe_sql: Callable):
    """The answer to ``q=`` on a pipe (see the module docstring), in the pipe's format."""
    _, meta, rows, statistics = run(text, (endpoint, values), pipe_sql, on_pipe=True)
    return render(fmt, meta, rows, statistics)
