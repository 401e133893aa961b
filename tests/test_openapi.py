"""/v0/openapi.json is valid OpenAPI 3.1 and describes every declared pipe and parameter;
/v0/docs renders it from assets served here, with no external URL."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from cartpulse.serving.render import FORMATS
from support import datasources

COLUMNS = datasources()["ecommerce_events"].column_names


@pytest.fixture(scope="module")
def spec(app):
    r = app.test_client().get("/v0/openapi.json")  # no token: the document holds no data
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


@pytest.fixture(scope="module")
def endpoints(app):
    found = app.extensions["cartpulse"].catalog.all()
    assert found, "the catalog is empty: the dbt models were not built"
    return found


def test_spec_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1")
    try:
        validate(spec)
    except OpenAPIValidationError as err:  # pragma: no cover - the message is the point
        pytest.fail(f"invalid OpenAPI document: {err}")


def test_spec_needs_no_token_and_reveals_no_rows(client):
    r = client.get("/v0/openapi.json")
    assert r.status_code == 200 and r.is_json
    assert '"data": [{' not in r.get_data(as_text=True)


def _resolve(spec, node):
    while "$ref" in node:
        path = node["$ref"].removeprefix("#/").split("/")
        node = spec
        for part in path:
            node = node[part]
    return node


def test_every_declared_pipe_and_parameter_is_described(spec, endpoints):
    for endpoint in endpoints.values():
        for fmt in FORMATS:
            path = f"/v0/pipes/{endpoint.name}.{fmt}"
            assert path in spec["paths"], f"{path} is not in the document"
            operation = spec["paths"][path]["get"]
            described = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
            assert set(described) == {p.name for p in endpoint.params} | {"q"}, path  # q: SQL over the answer
            headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
            assert headers == ["CartPulse-LSN"], path  # read-your-writes (replicas.py)
            assert set(operation["responses"]["200"]["headers"]) == {"CartPulse-Read-From", "CartPulse-Max-Staleness"}
            for param in endpoint.params:
                got = described[param.name]
                assert got["in"] == "query" and got["description"]
                schema = got["schema"]
                if param.is_array:  # Array(String): the bounds hold for each element
                    assert schema["type"] == "array" and got["explode"] is True
                    schema = schema["items"]
                assert schema["type"] == {"DateTime": "string", "Int": "integer", "Float": "number",
                                          "String": "string"}[param.kind.element.name if param.is_array else param.type]
                assert schema.get("default") == param.default
                assert schema.get("minimum") == param.min and schema.get("maximum") == param.max
                assert schema.get("maxLength") == param.max_length
                assert schema.get("enum") == (list(param.enum) if param.enum else None)
                if param.description:
                    assert param.description in got["description"]
            for status in ("400", "401", "403", "404", "429", "503"):
                error = _resolve(spec, operation["responses"][status])
                assert _resolve(spec, error["content"]["application/json"]["schema"])["required"] == ["error"]
        # The JSON answer's rows are typed from the columns' data_type.
        row = spec["components"]["schemas"][f"{endpoint.name}_row"]
        assert list(row["properties"]) == [c.name for c in endpoint.columns]
        for column in endpoint.columns:
            assert row["properties"][column.name].get("type"), f"{endpoint.name}.{column.name} has no type"


def test_seed_pipes_have_their_types(spec):
    """A concrete reading of the generic mapping, for the three seed endpoints."""
    props = spec["components"]["schemas"]
    assert props["top_products_row"]["properties"]["total_quantity"]["type"] == "integer"
    assert props["top_products_row"]["properties"]["total_revenue"]["type"] == "number"
    assert props["total_revenue_row"]["properties"]["time_bin"]["type"] == "string"
    interval = {p["name"]: p for p in spec["paths"]["/v0/pipes/total_revenue.json"]["get"]["parameters"]}["interval"]
    assert interval["schema"]["enum"] == ["1 minute", "15 minutes", "1 hour", "1 day"]
    assert interval["schema"]["default"] == "15 minutes"
    limit = {p["name"]: p for p in spec["paths"]["/v0/pipes/top_products.json"]["get"]["parameters"]}["limit"]
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}
    response = spec["components"]["schemas"]["PipeResponse"]
    assert response["required"] == ["meta", "data", "rows", "statistics"]


def test_events_and_other_routes_are_described(spec):
    post = spec["paths"]["/v0/events"]["post"]
    assert {p["name"] for p in post["parameters"]} >= {"name", "wait", "Idempotency-Key"}
    assert "application/x-ndjson" in post["requestBody"]["content"]
    body = _resolve(spec, post["requestBody"]["content"]["application/json"]["schema"])
    assert [_resolve(spec, one)["properties"].keys() for one in body["oneOf"]] == [
        spec["components"]["schemas"][f"{name}_event"]["properties"].keys() for name in sorted(datasources())]
    event = spec["components"]["schemas"]["ecommerce_events_event"]
    assert list(event["properties"]) == list(COLUMNS) and event["required"] == list(COLUMNS)
    assert event["properties"]["quantity"] == {**event["properties"]["quantity"], "type": "integer", "minimum": 0}
    assert event["properties"]["country"]["maxLength"] == 1000
    assert {"200", "202", "400", "401", "403", "404", "413", "422", "429", "503"} <= set(post["responses"])
    for path in ("/v0/pipes", "/v0/tokens", "/v0/tokens/{name}", "/v0/tokens/{name}/refresh",
                 "/v0/datasources/ecommerce_events.json", "/v0/datasources/ecommerce_events_quarantine.csv",
                 "/healthz", "/readyz", "/v0/openapi.json"):
        assert path in spec["paths"], path
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["token"] == {**schemes["token"], "type": "apiKey", "in": "query", "name": "token"}
    assert spec["paths"]["/v0/openapi.json"]["get"]["security"] == []


def test_every_flask_route_is_documented_or_a_page(app, spec):
    """A new API route fails this test until it is in the document (datasette's rule)."""
    pages = {"/", "/docs", "/v0/docs", "/v0/docs/assets/<string:filename>", "/static/<path:filename>"}
    templated = {re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", rule.rule) for rule in app.url_map.iter_rules()}
    documented = set(spec["paths"])
    for path in templated - {re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", p) for p in pages}:
        if "{filename}" in path:  # /v0/pipes/{filename}, /v0/datasources/{filename}: one path per name and format
            prefix = path.split("{filename}")[0]
            assert any(p.startswith(prefix) for p in documented), path
        else:
            assert path in documented, f"route {path} is not in /v0/openapi.json"


def _local_assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("page", ["/v0/docs", "/"])
def test_pages_load_only_local_assets(client, page):
    r = client.get(page)
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "//" not in "".join(re.findall(r"<(?:script|link)[^>]*>", html)), "a page loads something from elsewhere"
    assets = [a for a in _local_assets(html) if not a.startswith("data:")]
    assert assets
    for asset in assets:
        assert not urlparse(asset).netloc, asset
        with client.get(asset) as loaded:
            assert loaded.status_code == 200 and loaded.get_data(), asset


def test_docs_short_url_and_unknown_asset(client):
    r = client.get("/docs")
    assert r.status_code == 302 and r.headers["Location"].endswith("/v0/docs")
    r = client.get("/v0/docs/assets/swagger-editor-bundle.js")
    assert r.status_code == 404 and r.is_json  # only the files the page uses are served


def test_swagger_ui_reads_the_spec_without_an_online_validator(client):
    with client.get("/static/docs.js") as r:
        script = r.get_data(as_text=True)
    assert "validatorUrl: null" in script
