"""Browser-facing hardening: security headers on every answer.

The dashboard and the API reference are HTML pages that hold a token (in localStorage
and in the "Authorize" dialog), so they must not be framed by another site (clickjacking),
run a script from anywhere but this server, or leak their URL — which may carry
``?token=`` — to another site through the Referer header. JSON answers get the headers
that matter for them (no MIME sniffing, no referrer) too: a browser that opens one
directly must not render it as HTML.

``script-src 'self'``: every script is a file served from here (no inline script, no
eval). Styles allow 'unsafe-inline': Swagger UI and the API reference page set inline
styles, which cannot run code.
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
ALWAYS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
HTML = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY"}


def add_security_headers(response):
    """after_request hook: the headers above, without overriding one a view set."""
    wanted = ALWAYS | (HTML if response.mimetype == "text/html" else {})
    for name, value in wanted.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app) -> None:
    app.after_request(add_security_headers)
