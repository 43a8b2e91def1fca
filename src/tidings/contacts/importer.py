"""CSV import: any size in constant memory, one transaction per chunk of rows.

Headers from Mailchimp and HubSpot exports (and our own export) are recognised
case-insensitively; `--map column=field` overrides; other columns become attributes under
a snake_case key (`import_columns`). Empty cells keep what is stored. Rows that fail
validation go to a rejects CSV (their original cells plus `reason`), the rest are imported.
Re-importing a file updates, never duplicates. After each committed chunk a small progress
file records the byte offset, so an interrupted import can `resume` from there. The next
chunks are read and validated while the database writes this one (`import_reading`).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from tidings import errors
from tidings.clock import Clock
from tidings.contacts import bulk
from tidings.contacts.import_columns import (
    IMPORT_ALIASES,
    TARGETS,
    Column,
    parse_mapping,
    plan_columns,
    row_item,
    snake_case,
)
from tidings.contacts.import_reading import (
    HELPER_PROCESS_BYTES,
    SNIFF_BYTES,
    ByteCountingLines,
    Chunk,
    CsvSource,
    chunks_ahead,
    sniff_dialect,
)

__all__ = [
    "CHUNK_ROWS",
    "IMPORT_ALIASES",
    "SNIFF_BYTES",
    "TARGETS",
    "ByteCountingLines",
    "Column",
    "ImportJob",
    "ImportReport",
    "Progress",
    "import_csv",
    "parse_mapping",
    "plan_columns",
    "progress_file_exists",
    "row_item",
    "sniff_dialect",
    "snake_case",
]

CHUNK_ROWS = 5000

#: (bytes read, bytes in the file), called after each committed chunk.
Progress = Callable[[int, int], None]


@dataclass
class ImportReport:
    """Totals of one import (including the part done before a resume)."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    subscribed: int = 0
    offset: int = 0
    interrupted: bool = False
    resumed_at_row: int = 0


@dataclass(frozen=True)
class ImportJob:
    """What to import and where its side files go."""

    path: Path
    list_key: str | None = None
    mapping: tuple[tuple[str, str], ...] = ()
    rejects_path: Path | None = None

    @property
    def rejects(self) -> Path:
        return self.rejects_path or self.path.with_name(f"{self.path.stem}.rejects.csv")

    @property
    def progress_file(self) -> Path:
        stat = self.path.stat()
        key = f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.mapping}|"
        digest = hashlib.sha256(f"{key}{self.list_key}".encode()).hexdigest()[:16]
        return self.rejects.parent / f".tidings-import-{digest}.json"


def import_csv(
    engine: Engine,
    clock: Clock,
    job: ImportJob,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    helper_process: bool | None = None,
) -> ImportReport:
    """Import `job.path`; returns the totals. Nothing is written when the file, a mapping or
    the list is wrong. `should_stop` is asked after each chunk (Ctrl-C in the CLI).
    `helper_process` validates in a second process (default: for files from
    `HELPER_PROCESS_BYTES` up)."""
    if not job.path.is_file():
        raise errors.InvalidInput.field("file", f"{job.path} does not exist")
    with engine.connect() as conn:
        list_id = bulk.find_list(conn, job.list_key) if job.list_key else None
    total = job.path.stat().st_size
    with job.path.open("rb") as raw:
        lines = ByteCountingLines(raw)
        dialect = sniff_dialect(raw)
        reader = csv.reader(lines, dialect)
        header = next(reader, None)
        if not header:
            raise errors.InvalidInput.field("file", f"{job.path} is empty")
        plan = plan_columns(header, dict(job.mapping))
    report, start = _start(job, lines.offset, resume)
    source = CsvSource(job.path, start, dialect, plan, chunk_rows)
    if helper_process is None:
        helper_process = total - start >= HELPER_PROCESS_BYTES
    rejects = _RejectsFile(job.rejects, header, reader.dialect, append=report.rows > 0)
    writer = _ChunkWriter(engine, clock, list_id, f"import:{job.path.name}", source)
    with rejects, chunks_ahead(source, helper_process) as chunks:
        for chunk in chunks:
            writer.write(chunk, report, rejects)
            report.offset = chunk.offset
            _save_progress(job, report)
            if progress is not None:
                progress(chunk.offset, total)
            if should_stop is not None and should_stop():
                report.interrupted = True
                return report
    job.progress_file.unlink(missing_ok=True)
    return report


def _start(job: ImportJob, after_header: int, resume: bool) -> tuple[ImportReport, int]:
    """A fresh report, or the saved one on resume; and the file offset to read from."""
    saved = _load_progress(job) if resume else None
    if saved is None:
        return ImportReport(), after_header
    saved.resumed_at_row = saved.rows
    return saved, saved.offset


@dataclass
class _ChunkWriter:
    """Writes prepared chunks, one transaction each, and their rejects."""

    engine: Engine
    clock: Clock
    list_id: int | None
    source_name: str
    source: CsvSource

    def write(self, chunk: Chunk, report: ImportReport, rejects: _RejectsFile) -> None:
        """Upsert one prepared chunk in one transaction; write its rejects."""
        result = self._upsert(chunk.prepared)
        reasons = dict(chunk.reasons)
        for rejected in result.rejected:
            at = chunk.positions[rejected.index]
            reasons[at] = f"{reasons[at]}; {rejected.reason}" if at in reasons else rejected.reason
        for position in sorted(reasons):
            rejects.write(chunk.cells(self.source, position), reasons[position])
        report.rows += chunk.rows
        report.created += result.created
        report.updated += result.updated
        report.subscribed += result.subscribed
        report.rejected += len(reasons)

    def _upsert(self, prepared: bulk.Prepared) -> bulk.UpsertResult:
        try:
            return self._upsert_once(prepared)
        except IntegrityError:  # another writer created one of these contacts just now
            return self._upsert_once(prepared)

    def _upsert_once(self, prepared: bulk.Prepared) -> bulk.UpsertResult:
        with self.engine.begin() as conn:
            return bulk.upsert(
                conn, self.clock, prepared, list_id=self.list_id, source=self.source_name
            )


class _RejectsFile:
    """The rejects CSV, created on the first reject (a stale one is removed up front)."""

    def __init__(self, path: Path, header: list[str], dialect: Any, *, append: bool) -> None:
        self.path, self.header, self.dialect, self.append = path, header, dialect, append
        self._file: TextIO | None = None
        self._writer: Any = None
        if not append:
            path.unlink(missing_ok=True)

    def write(self, cells: list[str], reason: str) -> None:
        if self._writer is None:
            exists = self.append and self.path.exists()
            self._file = self.path.open("a" if exists else "w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file, self.dialect)
            if not exists:
                self._writer.writerow([*self.header, "reason"])
        self._writer.writerow([*cells, reason])

    def __enter__(self) -> _RejectsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def _save_progress(job: ImportJob, report: ImportReport) -> None:
    target = job.progress_file
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"file": str(job.path), **asdict(report)}))
    tmp.replace(target)


def _load_progress(job: ImportJob) -> ImportReport | None:
    try:
        saved = json.loads(job.progress_file.read_text())
    except (OSError, ValueError):
        return None
    saved.pop("file", None)
    return ImportReport(**{**saved, "interrupted": False})


def progress_file_exists(job: ImportJob) -> bool:
    """Whether an earlier import of this very file stopped part-way (so `resume` helps)."""
    return job.path.is_file() and job.progress_file.exists()
