"""``cartpulse import FILE [--name DATA_SOURCE]``: a CSV, NDJSON or Parquet file straight into the database.

The file type comes from its extension (``.gz`` allowed for CSV/NDJSON). It goes through
the bulk import's code (``ingest/bulk.py``): the same validation, quarantine and pending
rows as the API, one transaction for the whole file. A progress bar with rate and ETA
goes to stderr when it is a terminal (tqdm).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tqdm import tqdm


def import_file(settings, url: str, path: Path, name: str) -> int:
    """Load one file into the data source ``name`` with the bulk import's code; print its
    summary as JSON."""
    from cartpulse.errors import ApiError
    from cartpulse.ingest import bulk, ops_log
    from cartpulse.ingest.writer import PartitionCache
    from cartpulse.project.datasources import for_settings
    from cartpulse.storage.db import Database

    source = for_settings(settings).get(name)
    if source is None:
        print(f"cartpulse import: data source '{name}' not found", file=sys.stderr)
        return 2
    fmt = bulk.detect_format(None, path.name)
    gzipped = path.name.lower().endswith(".gz")
    db = Database(url, pool_size=2, statement_timeout_ms=settings.statement_timeout_ms)
    size = path.stat().st_size
    with open(path, "rb") as raw, tqdm(desc=f"import {path.name}", disable=None, file=sys.stderr,
                                       unit="B" if fmt != "parquet" else "rows", unit_scale=True,
                                       total=size if fmt != "parquet" else _parquet_rows(path)) as bar:
        def progress(batch) -> None:
            if fmt == "parquet":
                bar.update(len(batch.rows) + len(batch.quarantined))
            else:  # how far into the file (compressed bytes for .gz): what the total measures
                bar.update(os.lseek(raw.fileno(), 0, os.SEEK_CUR) - bar.n)

        try:
            stream = raw if fmt == "parquet" else bulk.open_stream(raw, gzipped, None)
            op = ops_log.Operation(ops_log.IMPORT, name, None)  # no token: logged with token_name null
            summary = bulk.import_stream(db, PartitionCache(), source, fmt, stream, on_chunk=progress, op=op,
                                         absorb_after_rows=settings.absorb_after_rows)
        except ApiError as err:
            print(f"cartpulse import: {err.message}; nothing was stored", file=sys.stderr)
            return 2
        finally:
            db.dispose()
    print(json.dumps(summary.answer(name, "append")))
    return 0


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
