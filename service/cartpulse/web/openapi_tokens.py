"""The OpenAPI description of ``/v0/tokens`` (``openapi.py`` merges it): scopes as
Tinybird's objects, a JSON body of them, and a JWT when ``expiration_time`` is given
(access/tokens.py, access/token_scopes.py)."""

from __future__ import annotations

from cartpulse.web.openapi_parts import error_content, error_responses

_SCOPE = {"type": "object", "required": ["type"], "properties": {
    "type": {"type": "string", "enum": ["ADMIN", "DATASOURCES:APPEND", "DATASOURCES:READ", "PIPES:READ"]},
    "resource": {"type": "string", "description": "The data source or pipe (not for ADMIN)."},
    "fixed_params": {"type": "object", "description": "JWT only: parameters of the pipe this token always binds"
                                                      " (a list for an Array parameter)."}}}
_SCOPES = {"type": "array", "items": _SCOPE}
_STRING_SCOPE = ("`ADMIN`, `DATASOURCES:APPEND:<name>`, `DATASOURCES:READ:<name>` or `PIPES:READ:<pipe>`;"
                 " repeat for several.")


def token_paths() -> dict:
    token = {"description": "The token, shown this once (a JWT when `expiration_time` was given).",
             "content": {"application/json": {"schema": {
                 "type": "object", "required": ["name", "token", "scopes"],
                 "properties": {"name": {"type": "string"}, "token": {"type": "string"}, "scopes": _SCOPES,
                                "expiration_time": {"type": "integer"}}}}}}
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 200}}
    admin = "Needs an `ADMIN` token."
    body = {"required": False, "content": {"application/json": {"schema": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 200},
        "scopes": {"type": "array", "items": {"oneOf": [_SCOPE, {"type": "string"}]}},
        "scope": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}}}}}
    return {
        "/v0/tokens": {
            "get": {"operationId": "list_tokens", "tags": ["tokens"], "summary": "List tokens (names and scopes, no secrets)",
                    "description": admin, "responses": {"200": {"description": "The tokens.", "content": {
                        "application/json": {"schema": {"type": "object", "properties": {"tokens": {
                            "type": "array", "items": {"type": "object", "properties": {
                                "name": {"type": "string"}, "scopes": _SCOPES,
                                "created_at": {"type": "string"}, "updated_at": {"type": "string"}}}}}}}}},
                        **error_responses("401", "403", "429", "503")}},
            "post": {"operationId": "create_token", "tags": ["tokens"], "summary": "Create a token, or mint a JWT",
                     "description": admin + " Scopes as `scope=` strings, or a JSON body of scope objects (Tinybird's"
                                            " shape). With `expiration_time` the answer is a JWT signed with the admin"
                                            " token, stored nowhere, granting `PIPES:READ` scopes with their"
                                            " `fixed_params`.",
                     "parameters": [
                         {"name": "name", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200},
                          "description": "The token's name (or `name` in the JSON body)."},
                         {"name": "scope", "in": "query", "required": False, "style": "form", "explode": True,
                          "description": _STRING_SCOPE, "schema": {"type": "array", "items": {"type": "string"}}},
                         {"name": "expiration_time", "in": "query", "required": False,
                          "description": "Epoch seconds: mint a JWT that expires then.", "schema": {"type": "integer"}}],
                     "requestBody": body,
                     "responses": {"200": token, "409": {"description": "A token of that name exists.",
                                                         "content": error_content()},
                                   **error_responses("400", "401", "403", "429", "503")}}},
        "/v0/tokens/{name}/refresh": {"post": {
            "operationId": "refresh_token", "tags": ["tokens"], "summary": "Give a token a new secret (the old one stops)",
            "description": admin, "parameters": [name],
            "responses": {"200": token, **error_responses("400", "401", "403", "404", "429", "503")}}},
        "/v0/tokens/{name}": {"delete": {
            "operationId": "delete_token", "tags": ["tokens"], "summary": "Delete a token", "description": admin,
            "parameters": [name],
            "responses": {"204": {"description": "Deleted."}, **error_responses("400", "401", "403", "404", "429", "503")}}},
    }
