"""CartPulse: a shop's events in, dbt models out as always-fresh JSON endpoints.

The package is split by responsibility: ``config`` (settings from the environment),
``embedded`` (the pip-installed PostgreSQL), ``storage`` (data-source tables),
``events`` (parsing and validating event rows), ``ingest`` (the Events API),
``catalog`` (endpoint declarations read from the dbt project), ``pipes`` (serving
them), ``render`` (JSON/CSV/NDJSON), ``auth`` (tokens), ``dbt`` (running dbt) and
``cli`` (the ``cartpulse`` command).
"""
