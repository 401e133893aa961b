"""Pages for people: the OpenAPI document, the API reference, the live dashboard."""
