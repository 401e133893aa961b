"""Writes: validating rows, the one batch writer, the Events API, bulk import, idempotency keys."""
