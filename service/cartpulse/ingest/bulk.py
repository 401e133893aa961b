"""Bulk import: ``POST /v0/datasources?name=<data source>&mode=append`` and ``cartpulse import``.

CSV (with a header line or without one: csv_dialect.py), NDJSON and Parquet, as a multipart upload (Tinybird's
``-F csv=@file.csv``) or as the raw body; ``Content-Encoding: gzip`` or a ``.gz`` file
name for compressed CSV/NDJSON. The upload is read as a stream, ``CHUNK_ROWS`` rows at a
time, never whole in memory (a multipart file part is spooled to a temporary file by
werkzeug; a raw Parquet body is spooled to one, Parquet keeps its index at the end).

Each chunk meets exactly the events API's rules (``rows.parse_body`` for NDJSON,
``rows.add_record`` for CSV and Parquet rows, both from the data source's declaration)
and is written by the events API's own writer (``writer.copy_batch``): valid rows to the
data source's table *and* its pending twin, so rollups stay exact, bad rows to the
quarantine with this import's ``import_id``.

**Atomicity: all or nothing per import.** Every chunk is COPYed inside one transaction,
committed after the last chunk; a failure (bad gzip, a dropped connection, a server
stopped mid-way, a body over ``MAX_IMPORT_BYTES``) stores nothing, so the import can
simply be sent again. The price: the rows become visible together, at the end, and a very
long import holds one transaction open (VACUUM cannot remove dead rows meanwhile).
``Idempotency-Key`` is not supported here: when the answer is lost after the commit, the
rows are stored; look before resending (e.g. count the events of the file's time range).

**Replace** (``mode=replace``, ``replace``): the same transaction first deletes the rows
being replaced — every row, or those matching ``replace_condition`` — exactly as
``/delete`` does (deletes.py: each one's retraction goes to the pending table, so every
rollup takes it back), then appends. With a condition, the new rows are staged in a
temporary table and only those matching it are stored (``discarded_rows`` counts the
others): the replaced slice is exactly the condition's, before and after. Readers see the
old rows until the commit, the new ones from it; ingest committed after the delete's
statement began is kept.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import BinaryIO, Callable, Iterator

from cartpulse.errors import ApiError
from cartpulse.ingest import csv_dialect, deletes, ops_log, transport, writer
from cartpulse.ingest.delete_condition import Condition
from cartpulse.ingest.rows import Batch, add_record, parse_body, quarantine_line
from cartpulse.ops import metrics
from cartpulse.project import types
from cartpulse.project.datasources import Column, DataSource
from cartpulse.storage.absorb import absorb_after_batch
from cartpulse.storage.wal import commit_position

FORMATS = ("csv", "ndjson", "parquet")
#: Rows per chunk: parsed, validated and COPYed together (one COPY statement each).
CHUNK_ROWS = 10_000
#: Longest NDJSON line or CSV field read: a longer one is quarantined, and never held whole.
MAX_LINE_BYTES = 1 << 20
_CONTENT_TYPES = {"text/csv": "csv", "application/csv": "csv", "application/x-ndjson": "ndjson",
                  "application/ndjson": "ndjson", "application/jsonl": "ndjson", "application/json": "ndjson",
                  "application/vnd.apache.parquet": "parquet", "application/x-parquet": "parquet"}
_EXTENSIONS = {"csv": "csv", "ndjson": "ndjson", "jsonl": "ndjson", "json": "ndjson", "parquet": "parquet"}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class BadImport(ApiError):
    """A bad import (400/413): nothing is stored."""


@dataclass
class Summary:
    successful_rows: int = 0
    quarantined_rows: int = 0
    import_id: str = ""
    format: str = ""
    elapsed: float = 0.0
    position: str = ""  # the WAL position covering the commit (replicas.py)
    #: A replace: the rows it deleted, and the new rows outside its replace_condition.
    replaced_rows: int | None = None
    discarded_rows: int | None = None

    def answer(self, name: str, mode: str) -> dict:
        body = {"successful_rows": self.successful_rows, "quarantined_rows": self.quarantined_rows,
                "import_id": self.import_id, "datasource": name, "mode": mode, "format": self.format,
                "elapsed": round(self.elapsed, 3)}
        if self.replaced_rows is not None:
            body.update(replaced_rows=self.replaced_rows, discarded_rows=self.discarded_rows or 0)
        return body


def detect_format(explicit: str | None, filename: str | None = None, content_type: str | None = None) -> str:
    """``format=`` when given, else the file name's extension (``.gz`` aside), else the
    Content-Type; 400 when none says."""
    if explicit:
        if explicit not in FORMATS:
            raise BadImport(400, f"unknown format '{explicit[:40]}': use csv, ndjson or parquet")
        return explicit
    if filename:
        stem = filename.lower().removesuffix(".gz")
        ext = stem.rpartition(".")[2]
        if ext in _EXTENSIONS:
            return _EXTENSIONS[ext]
    if content_type and content_type.lower() in _CONTENT_TYPES:
        return _CONTENT_TYPES[content_type.lower()]
    raise BadImport(400, "cannot tell the format: pass format=csv|ndjson|parquet, a file name ending in "
                            ".csv/.ndjson/.parquet, or a Content-Type such as text/csv")


class LimitedReader(io.RawIOBase):
    """A binary stream that counts what it yields and refuses more than ``limit`` bytes
    (413): ``cartpulse import`` of a file has no HTTP limit in front of it."""

    def __init__(self, raw: BinaryIO, limit: int | None):
        self.raw, self.limit, self.count = raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        n = len(data)
        self.count += n
        if self.limit is not None and self.count > self.limit:
            raise BadImport(413, f"import over the limit of {self.limit} bytes (MAX_IMPORT_BYTES); nothing was stored")
        buffer[:n] = data
        return n


def open_stream(raw: BinaryIO, gzipped: bool, limit: int | None) -> io.BufferedReader:
    """The upload as a buffered stream of at most ``limit`` bytes (413 past it),
    gunzipped strictly and with a bounded ratio when ``gzipped`` (``transport.py``)."""
    if gzipped:
        return transport.decoded(raw, True, limit, what="import", setting="MAX_IMPORT_BYTES")
    return io.BufferedReader(LimitedReader(raw, limit), buffer_size=1 << 20)


def chunks(fmt: str, stream: BinaryIO, source: DataSource, dialect: csv_dialect.Dialect | None = None) -> Iterator[Batch]:
    """The upload as batches of at most CHUNK_ROWS validated rows and quarantined lines."""
    if fmt == "csv":
        return _csv_chunks(stream, source, dialect)
    return {"ndjson": _ndjson_chunks, "parquet": _parquet_chunks}[fmt](stream, source)


def _ndjson_chunks(stream: BinaryIO, source: DataSource) -> Iterator[Batch]:
    lines, first, long_lines, number = [], 1, [], 0

    def batch() -> Batch:
        return _with_long_lines(_renumbered(parse_body(b"\n".join(lines), source), first - 1), source, long_lines)

    while line := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            long_lines.append((number, line[:1024]))
            while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass  # read past it, never holding more than MAX_LINE_BYTES of it
            line = b""  # keeps the numbering: parse_body skips an empty line
        lines.append(line.rstrip(b"\n"))
        if len(lines) == CHUNK_ROWS:
            yield batch()
            lines, first, long_lines = [], number + 1, []
    if lines:
        yield batch()


def _with_long_lines(batch: Batch, source: DataSource, long_lines: list[tuple[int, bytes]]) -> Batch:
    """Quarantine the lines too long to read (a line is at most MAX_LINE_BYTES)."""
    for number, start in long_lines:
        batch.json_lines += 1  # a line that was sent, so the import is not "no rows"
        quarantine_line(batch, source, number, start.decode("utf-8", "replace"),
                        f"longer than {MAX_LINE_BYTES} bytes")
    return batch


def _renumbered(batch: Batch, offset: int) -> Batch:
    """parse_body numbers a chunk's lines from 1: make them the upload's line numbers."""
    for q in batch.quarantined:
        q.line += offset
    if batch.first_bad_line:
        batch.first_bad_line = (batch.first_bad_line[0] + offset, batch.first_bad_line[1])
    return batch


def _csv_chunks(stream: BinaryIO, source: DataSource, dialect: csv_dialect.Dialect | None = None) -> Iterator[Batch]:
    # surrogateescape: invalid UTF-8 reaches validation as a lone surrogate, which
    # quarantines that row (as the events API does) instead of failing the import.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv_dialect.reader(text, dialect)
    first = next(reader, None)
    if first is None:
        return
    index, first_is_data = csv_dialect.layout(first, source)  # a header, or the first row (csv_dialect.py)
    batch = Batch()
    rows = itertools.chain([first] if first_is_data else [], _csv_rows(reader))
    for fields in rows:
        if isinstance(fields, csv.Error):  # a field past MAX_LINE_BYTES: that line only
            quarantine_line(batch, source, reader.line_num, "", f"not readable as CSV: {fields}")
            batch.json_lines += 1
        elif not fields:
            continue
        elif index is None and (why := csv_dialect.field_count_error(fields, source)):
            # Not counted as read: a file none of whose rows has the right width is refused
            # whole, with this reason (a header that names no column, most likely).
            quarantine_line(batch, source, reader.line_num, _csv_line(fields), why)
            batch.first_bad_line = batch.first_bad_line or (reader.line_num, why)
        else:
            pairs = index if index is not None else list(zip(source.columns, range(len(fields))))
            record = {c.name: _csv_value(c, fields[i]) if i < len(fields) else None for c, i in pairs}
            add_record(batch, source, reader.line_num, _csv_line(fields), record)
        if len(batch.rows) + len(batch.quarantined) >= CHUNK_ROWS:
            yield batch
            batch = Batch()
    if batch.rows or batch.quarantined:
        yield batch


def _csv_rows(reader) -> Iterator[list[str] | csv.Error]:
    """The reader's rows, and in place of a line it cannot read, the error."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield err


def _csv_value(column: Column, text: str):
    """CSV has only text: a field of a type that JSON would carry as a number (Int and
    Float, a DateTime as epoch seconds) is read as one when it looks like one; an empty
    field is missing; anything else stays text and fails validation by name."""
    if text == "":
        return None
    if column.type.numbers_in_csv:
        stripped = text.strip()
        if _NUMBER.fullmatch(stripped):
            try:
                return int(stripped) if re.fullmatch(r"[+-]?\d+", stripped) else float(stripped)
            except ValueError:  # past Python's 4,300 digits: left as text, refused by validation
                return text
        if column.type is types.FLOAT and stripped.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
            return float(stripped)  # rejected by validation as non-finite, with that reason
    return text


def _csv_line(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def _parquet_chunks(stream: BinaryIO, source: DataSource) -> Iterator[Batch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    spool = None
    if not _seekable(stream):
        spool = tempfile.TemporaryFile(prefix="cartpulse-import-")  # Parquet's index is at its end
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
        stream = spool
    try:
        try:
            parquet = pq.ParquetFile(stream)
        except (pa.ArrowException, OSError) as err:
            raise BadImport(400, f"not a Parquet file: {err}") from None
        present = parquet.schema_arrow.names
        missing = [c.name for c in source.columns if c.name not in present and not c.nullable]
        if missing:
            raise BadImport(400, f"the Parquet file lacks the columns {', '.join(missing)}")
        number = 0
        columns = [c for c in source.column_names if c in present]
        for record_batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            batch = Batch()
            for record in record_batch.to_pylist():
                number += 1
                record = {c: _plain(v) for c, v in record.items()}
                add_record(batch, source, number, json.dumps(record, ensure_ascii=False, default=str), record)
            yield batch
    finally:
        if spool is not None:
            spool.close()


def _seekable(stream) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError):
        return False


def _plain(value):
    """Parquet's typed values as the events API's JSON would carry them."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat() + " 00:00:00"
    if isinstance(value, Decimal):
        return float(value)
    return value


def import_stream(db, partitions, source: DataSource, fmt: str, stream: BinaryIO,
                  on_chunk: Callable[[Batch], None] | None = None, op: ops_log.Operation | None = None,
                  absorb_after_rows: int = 0, dialect: csv_dialect.Dialect | None = None,
                  replace: Condition | None = None) -> Summary:
    """Read, validate and write a whole upload in one transaction (all or nothing); with
    ``op``, its row of the operations log in that transaction (or, failed, after it);
    then, when it wrote at least ``absorb_after_rows`` rows, absorb them into the rollups.
    With ``replace`` (``deletes.EVERY_ROW``, or a replace_condition), a replace."""
    started = time.perf_counter()
    summary = Summary(import_id=uuid.uuid4().hex, format=fmt)
    try:
        _import(db, partitions, source, fmt, stream, on_chunk, op, summary, dialect, replace)
    except Exception as err:
        ops_log.record_error(db, op, err.message if isinstance(err, ApiError) else err, summary.import_id)
        raise
    absorb_after_batch(db, summary.successful_rows + (summary.replaced_rows or 0), absorb_after_rows)
    metrics.count_rows(source.name, "import", summary.successful_rows, summary.quarantined_rows)
    summary.elapsed = time.perf_counter() - started
    return summary


def _import(db, partitions, source: DataSource, fmt: str, stream: BinaryIO, on_chunk, op, summary: Summary,
            dialect: csv_dialect.Dialect | None, replace: Condition | None) -> None:
    decoded = 0
    first_bad = None
    with db.psycopg() as conn, conn.cursor() as cur:
        staged = None
        if replace is not None:
            conn.execute("set local statement_timeout = 0")  # a replace deletes in one statement
            summary.replaced_rows = deletes.delete_in(cur, source, replace)
            staged = None if replace is deletes.EVERY_ROW else deletes.stage_replacement(cur, source)
        for batch in chunks(fmt, stream, source, dialect):
            # Partitions are created in their own committed transactions (ATTACH takes a
            # lock that does not conflict with this transaction's inserts).
            partitions.ensure(db, source, batch.rows)
            writer.copy_batch(cur, source, batch, summary.import_id, into=staged)
            summary.successful_rows += len(batch.rows)
            summary.quarantined_rows += len(batch.quarantined)
            decoded += batch.json_lines
            first_bad = first_bad or batch.first_bad_line
            if on_chunk is not None:
                on_chunk(batch)
        if summary.successful_rows + summary.quarantined_rows == 0:
            raise BadImport(400, "empty import: no rows")
        if decoded == 0:
            line, why = first_bad or (1, "no row could be read")
            raise BadImport(400, f"line {line}: {why}; nothing was stored", line=line)
        if staged is not None:
            kept = deletes.keep_matching(cur, source, replace)
            summary.discarded_rows, summary.successful_rows = summary.successful_rows - kept, kept
        ops_log.record_ok(cur, op, summary.import_id, summary.successful_rows, summary.quarantined_rows)
        summary.position = commit_position(conn)
