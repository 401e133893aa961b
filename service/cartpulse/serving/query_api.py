"""The Query API: ``GET /v0/sql?q=…`` and ``POST /v0/sql``, as Tinybird's clients call it.

The statement comes as ``q`` (query string or form field) or, on a POST of any other
content type (the SDKs send ``text/plain``), as the whole body. The answer's format is
the statement's ``FORMAT`` clause, JSON when it has none (the shape of Tinybird's own
example, and what the SDKs parse). Besides ``q``, a request may carry:

* ``pipeline=<pipe>``: ``_`` in the statement is that pipe's result; the request's other
  parameters are then the pipe's, validated as for a pipe call;
* ``output_format_json_quote_64bit_integers`` / ``output_format_json_quote_denormals``
  (0 or 1), applied to JSON answers (sql_formats.py); ``output_format_parquet_string_as_string``
  (0 or 1) is accepted and changes nothing, as no Parquet answer is ever written;
* ``token`` and ``from`` (the SDKs' own tag), which do not change the answer.

Any other parameter is a 400 naming it: Tinybird's templated Query API parameters are not
supported. Each request is recorded in ``cartpulse.pipe_stats`` (and
``tinybird.pipe_stats_rt``) as the pipe ``query_api``, as Tinybird records it.
"""

from __future__ import annotations

from flask import Blueprint, request

from cartpulse.access.auth import request_caller, require_scope
from cartpulse.context import request_state, service
from cartpulse.errors import ApiError
from cartpulse.project.params import parse_request
from cartpulse.serving import sql_formats
from cartpulse.serving.pipe_query import run
from cartpulse.serving.pipes import endpoint_query
from cartpulse.serving.sql_query import pipe_values

bp = Blueprint("query_api", __name__)

#: The pipe name Tinybird's statistics give Query API requests.
STATS_NAME = "query_api"
_IGNORED = {"token", "from"}
FLAGS = ("output_format_json_quote_64bit_integers", "output_format_json_quote_denormals",
          "output_format_parquet_string_as_string")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@bp.route("/v0/sql", methods=["GET", "POST"])
def query():
    request_state().pipe = STATS_NAME  # pipe_stats and the latency histogram, as Tinybird names it
    request_caller()  # 401 before anything else
    args = request.values if request.method == "GET" or request.mimetype in _FORM_TYPES else request.args
    for key in args:
        if len(args.getlist(key)) > 1:
            raise ApiError(400, f"the parameter '{key[:60]}' is given more than once", parameter=key[:60])
    text = _statement(args)
    flags = {name: _flag(args, name) for name in FLAGS}
    known = {"q", "pipeline", *_IGNORED, *FLAGS}
    this = None
    pipeline = args.get("pipeline")
    if pipeline:
        endpoint = service().catalog.get(pipeline)
        if endpoint is None:
            raise ApiError(404, f"pipe '{pipeline[:100]}' not found")
        require_scope(f"PIPES:READ:{endpoint.name}")
        fixed = request_caller().fixed_params.get(endpoint.name)
        pipe_values(endpoint, fixed)  # a signed token's fixed parameters must all bind
        this = (endpoint, parse_request(endpoint.params, args, fixed=fixed))
        known |= {p.name for p in endpoint.params}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ApiError(400, f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(k[:60] for k in unknown)}:"
                            " the Query API takes q, pipeline (and that pipe's parameters), token, from and"
                            f" {', '.join(FLAGS)}; templated parameters are not supported",
                       parameter=unknown[0][:60])
    compiled, meta, rows, statistics = run(text, this, endpoint_query)
    return sql_formats.write(compiled.format or "json", meta, rows, statistics,
                             quote_64bit=flags[FLAGS[0]], quote_denormals=flags[FLAGS[1]])


def _statement(args) -> str:
    """``q`` from the query string or form, else the body of a non-form POST."""
    text = args.get("q")
    if request.method == "POST" and request.mimetype not in _FORM_TYPES:
        body = request.get_data(cache=False)
        if body.strip():
            if text is not None:
                raise ApiError(400, "the SQL is given twice: as q= and as the request body", parameter="q")
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, "the request body is not UTF-8 text") from None
    if text is None or not text.strip():
        raise ApiError(400, "missing the SQL: pass it as q=… or as the POST body", parameter="q")
    return text


def _flag(args, name: str) -> bool:
    value = args.get(name)
    if value is None or value == "":
        return False
    if value.lower() not in ("0", "1", "true", "false"):
        raise ApiError(400, f"invalid value for parameter '{name}': use 0 or 1", parameter=name)
    return value.lower() in ("1", "true")
