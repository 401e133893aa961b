"""PostgreSQL: connections, the data-source tables and policies, the embedded server, WAL positions."""
