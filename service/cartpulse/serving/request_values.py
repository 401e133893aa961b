"""A pipe request's parameters, wherever the client put them: the query string, a
form-encoded body or a JSON body.

Tinybird's clients switch from GET to POST when the URL would grow past what servers
accept (about 8 KB): the same parameters then travel form-encoded
(``application/x-www-form-urlencoded``, or ``multipart/form-data``) or, as Tinybird
documents for POST, as one JSON object (``{"country": ["DE", "US"], "limit": 5}``: a
list is an array parameter's values; a string, number or boolean one value). A
parameter found in two places counts as given twice, as repeated keys do (params.py
refuses that for a scalar). A body of any other type is a 400 naming it: ignoring it
would answer with default parameters, silently.
"""

from __future__ import annotations

import json

from flask import request
from werkzeug.datastructures import MultiDict

from cartpulse.errors import ApiError

_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _text(name: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ApiError(400, f"JSON body: parameter '{name}' must be a string, a number, a boolean or a list of"
                        f" them", parameter=name)


def _json_body() -> list[tuple[str, str]]:
    try:
        body = json.loads(request.get_data(cache=True) or b"{}")
    except ValueError as err:
        raise ApiError(400, f"the JSON body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object of parameters")
    pairs = []
    for name, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, _text(name, item)))
    return pairs


def request_values() -> MultiDict:
    """The query string's parameters, plus the body's on a POST."""
    pairs = list(request.args.items(multi=True))
    if request.method != "POST":
        return MultiDict(pairs)
    if request.mimetype in _FORMS:
        pairs += request.form.items(multi=True)
    elif request.mimetype == "application/json":
        pairs += _json_body()
    elif request.get_data(cache=True):
        raise ApiError(400, f"a POST body of type '{request.mimetype[:60] or 'none'}' is not read: send the"
                            " parameters form-encoded or as a JSON object")
    return MultiDict(pairs)
