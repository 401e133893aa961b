"""What the dbt project declares, read by the service: the data sources and the endpoints."""
