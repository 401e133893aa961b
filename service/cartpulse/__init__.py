"""CartPulse: a shop's events in, dbt models out as always-fresh JSON endpoints.

The package is grouped by concern, each layer importing only those below it
(docs/architecture.md; tests/test_architecture.py keeps it so):

``cli``      the ``cartpulse`` command
``app``      the Flask factory
``web``      the OpenAPI document, the API reference page, the dashboard
``serving``  pipes, parameters, rendering, read replicas, the Data Sources API
``ingest``   row validation, the batch writer, the Events API, bulk import, idempotency
``ops``      the refresh scheduler, health and status, metrics, pipe statistics, dbt
``access``   tokens, scopes, signed read tokens, rate limits
``project``  what the dbt project declares: data sources and endpoints
``storage``  connections, data-source tables, the embedded server, WAL positions

``config`` (settings), ``errors`` (the one error shape) and ``context`` (per-process
and per-request state) are shared by all.
"""
