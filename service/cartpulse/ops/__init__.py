"""Running CartPulse: the refresh scheduler, health and status, metrics, pipe statistics, dbt."""
