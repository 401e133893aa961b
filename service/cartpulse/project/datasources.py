"""The data sources CartPulse writes: declared once, in the dbt project."""

#: Data sources that accept events, and the table each lands in.
DATA_SOURCES = {"ecommerce_events": "raw.ecommerce_events"}
