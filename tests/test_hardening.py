"""Hardening that a browser or a log reader meets: security headers (web/security.py)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", ["/", "/v0/docs"])
def test_html_pages_send_security_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-eval" not in csp and "script-src 'self' 'unsafe-inline'" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_json_answers_are_not_sniffed_and_leak_no_referrer(client, auth):
    for response in (client.get("/v0/pipes/top_products.json", headers=auth), client.get("/no-such-route")):
        assert response.is_json
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Content-Security-Policy" not in response.headers  # HTML pages only
