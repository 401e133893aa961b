"""Reads: pipe endpoints, their parameters, rendering, read replicas, the Data Sources API."""
