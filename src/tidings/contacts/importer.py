"""CSV import: any size in constant memory, one transaction per chunk of rows.

Headers from Mailchimp and HubSpot exports (and our own export) are recognised
case-insensitively; `--map column=field` overrides; other columns become attributes under
a snake_case key. Empty cells keep what is stored. Rows that fail validation go to a
rejects CSV (their original cells plus `reason`), the rest are imported. Re-importing a
file updates, never duplicates. After each committed chunk a small progress file records
the byte offset, so an interrupted import can `resume` from there.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from babel import Locale
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from tidings import errors
from tidings.clock import Clock
from tidings.contacts import bulk, exporter, fields

CHUNK_ROWS = 5000
SNIFF_BYTES = 8192

#: Header names (as `fields.alias_key` spells them) that exports use for profile columns,
#: beyond the trait aliases every input shares. `CC` is Mailchimp's country code,
#: `Record ID` HubSpot's contact id.
IMPORT_ALIASES = {
    **fields.TRAIT_ALIASES,
    "cc": "country",
    "countryregion": "country",
    "externalid": "external_id",
    "userid": "external_id",
    "recordid": "external_id",
    "mobilephonenumber": "phone",
    "fname": "first_name",  # Mailchimp merge tags
    "lname": "last_name",
    "tags": "tags",
}
TARGETS = (*fields.PROFILE_FIELDS, "tags", "ignore", "attributes.NAME")

#: (bytes read, bytes in the file), called after each committed chunk.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Column:
    """Where one CSV column goes: `kind` is profile | attribute | json_attribute | tags |
    ignore; `name` the profile field or attribute key."""

    kind: str
    name: str = ""


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


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """`["Email Address=email", "Plan=attributes.plan"]` as {lower-cased column: target}."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.partition("=")
        target = target.strip()
        if not sep or not column.strip():
            raise errors.InvalidInput.field("--map", f"{pair!r} is not column=field")
        if not _valid_target(target):
            raise errors.InvalidInput.field(
                "--map", f"{target!r} is not a field (use one of {', '.join(TARGETS)})"
            )
        mapping[column.strip().lower()] = target
    return mapping


def _valid_target(target: str) -> bool:
    if target.startswith("attributes."):
        return bool(target.removeprefix("attributes.").strip())
    return target in fields.PROFILE_FIELDS or target in ("tags", "ignore")


def plan_columns(header: Sequence[str], mapping: dict[str, str]) -> list[Column]:
    """Where each column of `header` goes; `mapping` (from `parse_mapping`) wins."""
    lowered = [h.strip().lower() for h in header]
    missing = [name for name in mapping if name not in lowered]
    if missing:
        raise errors.InvalidInput.field(
            "--map", f"no column {missing[0]!r} in the file (columns: {', '.join(header)})"
        )
    return [
        _target_column(mapping[low]) if low in mapping else _recognise(name, i)
        for i, (name, low) in enumerate(zip(header, lowered, strict=True))
    ]


def _target_column(target: str) -> Column:
    if target.startswith("attributes."):
        return Column("attribute", target.removeprefix("attributes.").strip())
    if target in ("tags", "ignore"):
        return Column(target)
    return Column("profile", target)


def _recognise(name: str, position: int) -> Column:
    stripped = name.strip()
    if stripped.lower().startswith("attributes.") and len(stripped) > len("attributes."):
        # Our own export: values are typed (JSON when they parse as JSON).
        return Column("json_attribute", stripped[len("attributes.") :])
    target = IMPORT_ALIASES.get(fields.alias_key(stripped))
    if target == "tags":
        return Column("tags")
    if target is not None:
        return Column("profile", target)
    return Column("attribute", snake_case(stripped) or f"column_{position + 1}")


def snake_case(name: str) -> str:
    """`MEMBER_RATING` -> `member_rating`, `State/Region` -> `state_region`,
    `leadStatus` -> `lead_status`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^0-9a-z]+", "_", spaced.lower()).strip("_")


def row_item(cells: Sequence[str], plan: Sequence[Column]) -> dict[str, Any]:
    """One CSV row as a `bulk.upsert` item; empty cells are left out."""
    item: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    if len(cells) > len(plan):
        raise errors.InvalidInput.field("row", f"{len(cells)} cells but {len(plan)} columns")
    for cell, column in zip(cells, plan, strict=False):
        if not cell or cell.isspace() or column.kind == "ignore":
            continue
        value = exporter.unescape(cell)
        if column.kind == "profile":
            item[column.name] = _country(value) if column.name == "country" else value
        elif column.kind == "attribute":
            attributes[column.name] = value
        elif column.kind == "json_attribute":
            attributes[column.name] = exporter.typed(value)
        else:
            item["tags"] = [*item.get("tags", ()), *_split_tags(value)]
    if attributes:
        item["attributes"] = attributes
    return item


def _split_tags(value: str) -> list[str]:
    # Mailchimp writes `"Customer","VIP"` inside the cell; we write `Customer,VIP`.
    return [t.strip().strip('"').strip() for t in value.split(",") if t.strip().strip('"')]


def _country(value: str) -> str:
    """HubSpot's `Country/Region` holds names (`Germany`); the profile wants `DE`."""
    if len(value) <= 3:
        return value
    return _country_names().get(value.strip().lower(), value)


@functools.cache
def _country_names() -> dict[str, str]:
    names = Locale("en").territories
    return {str(name).lower(): str(code) for code, name in names.items() if str(code).isalpha()}


class ByteCountingLines:
    """Lines of a binary file as text, counting the bytes handed out so far, so the byte
    offset after each CSV record is exact (csv.reader pulls lines only as it needs them)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.offset = 0
        if raw.read(3) == b"\xef\xbb\xbf":
            self.offset = 3
        raw.seek(self.offset)

    def seek(self, offset: int) -> None:
        self.raw.seek(offset)
        self.offset = offset

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self.raw.readline()
        if not line:
            raise StopIteration
        self.offset += len(line)
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.InvalidInput.field(
                "file", f"not UTF-8 near byte {self.offset - len(line)}; save it as UTF-8 CSV"
            ) from None


def sniff_dialect(raw: BinaryIO) -> type[csv.Dialect] | csv.Dialect:
    """Comma, semicolon or tab, from the first few KB."""
    start = raw.tell()
    sample = raw.read(SNIFF_BYTES).decode("utf-8", errors="replace").lstrip("\ufeff")
    raw.seek(start)
    if len(sample) >= SNIFF_BYTES // 2 and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel
    dialect = csv.excel()
    dialect.delimiter = sniffed.delimiter
    return dialect


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
) -> ImportReport:
    """Import `job.path`; returns the totals. Nothing is written when the file, a mapping or
    the list is wrong. `should_stop` is asked after each chunk (Ctrl-C in the CLI)."""
    if not job.path.is_file():
        raise errors.InvalidInput.field("file", f"{job.path} does not exist")
    with engine.connect() as conn:
        list_id = bulk.find_list(conn, job.list_key) if job.list_key else None
    with job.path.open("rb") as raw:
        total = job.path.stat().st_size
        lines = ByteCountingLines(raw)
        reader = csv.reader(lines, sniff_dialect(raw))
        header = next(reader, None)
        if not header:
            raise errors.InvalidInput.field("file", f"{job.path} is empty")
        plan = plan_columns(header, dict(job.mapping))
        report = _start(job, lines, resume)
        rejects = _RejectsFile(job.rejects, header, reader.dialect, append=report.rows > 0)
        source = f"import:{job.path.name}"
        chunks = _prepared_chunks(reader, lines, plan, chunk_rows)
        with rejects, _Ahead(chunks) as ahead:
            for chunk in ahead:
                _import_chunk(engine, clock, chunk, list_id, source, report, rejects)
                report.offset = chunk.offset
                _save_progress(job, report)
                if progress is not None:
                    progress(chunk.offset, total)
                if should_stop is not None and should_stop():
                    report.interrupted = True
                    return report
    job.progress_file.unlink(missing_ok=True)
    return report


def _start(job: ImportJob, lines: ByteCountingLines, resume: bool) -> ImportReport:
    """A fresh report, or the saved one (with the file positioned after it) on resume."""
    saved = _load_progress(job) if resume else None
    if saved is None:
        return ImportReport()
    lines.seek(saved.offset)
    saved.resumed_at_row = saved.rows
    return saved


@dataclass
class _Chunk:
    """Rows read, mapped and validated, waiting for the database."""

    cells: list[list[str]]
    positions: list[int]  # the chunk position of each prepared item
    reasons: dict[int, str]  # rejects found while mapping, by chunk position
    prepared: bulk.Prepared
    offset: int  # file offset just after the chunk's last row


def _prepared_chunks(
    reader: Iterator[list[str]], lines: ByteCountingLines, plan: Sequence[Column], size: int
) -> Iterator[_Chunk]:
    chunk: list[list[str]] = []
    try:
        for cells in reader:
            if cells:  # not a blank line
                chunk.append(cells)
            if len(chunk) >= size:
                yield _prepare_chunk(chunk, plan, lines.offset)
                chunk = []
    except csv.Error as exc:  # e.g. a cell beyond csv.field_size_limit(), a NUL byte
        raise errors.InvalidInput.field("file", f"near byte {lines.offset}: {exc}") from None
    if chunk:
        yield _prepare_chunk(chunk, plan, lines.offset)


def _prepare_chunk(chunk: list[list[str]], plan: Sequence[Column], offset: int) -> _Chunk:
    items: list[dict[str, Any]] = []
    positions: list[int] = []
    reasons: dict[int, str] = {}
    for position, cells in enumerate(chunk):
        try:
            items.append(row_item(cells, plan))
            positions.append(position)
        except errors.InvalidInput as exc:
            reasons[position] = exc.message
    return _Chunk(chunk, positions, reasons, bulk.prepare(items), offset)


class _Ahead:
    """Runs a chunk generator in a thread, at most `depth` chunks ahead: reading and
    validating the next chunk overlaps the database writing this one (the drivers release
    the GIL while they wait). Memory stays bounded; errors surface in the caller."""

    def __init__(self, chunks: Iterator[_Chunk], depth: int = 2) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, args=(chunks,), name="tidings-import-reader", daemon=True
        )

    def _produce(self, chunks: Iterator[_Chunk]) -> None:
        try:
            for chunk in chunks:
                if not self._put("chunk", chunk):
                    return
            self._put("end", None)
        except BaseException as exc:  # handed over to the consuming thread
            self._put("error", exc)

    def _put(self, kind: str, value: Any) -> bool:
        while not self._done.is_set():
            try:
                self._queue.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __enter__(self) -> Iterator[_Chunk]:
        self._thread.start()
        return self._consume()

    def _consume(self) -> Iterator[_Chunk]:
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def _import_chunk(
    engine: Engine,
    clock: Clock,
    chunk: _Chunk,
    list_id: int | None,
    source: str,
    report: ImportReport,
    rejects: _RejectsFile,
) -> None:
    """Upsert one prepared chunk in one transaction; write its rejects."""
    for attempt in (1, 2):
        try:
            with engine.begin() as conn:
                result = bulk.upsert(conn, clock, chunk.prepared, list_id=list_id, source=source)
            break
        except IntegrityError:  # another writer created one of these contacts just now
            if attempt == 2:
                raise
    reasons = dict(chunk.reasons)
    for rejected in result.rejected:
        at = chunk.positions[rejected.index]
        reasons[at] = f"{reasons[at]}; {rejected.reason}" if at in reasons else rejected.reason
    for position in sorted(reasons):
        rejects.write(chunk.cells[position], reasons[position])
    report.rows += len(chunk.cells)
    report.created += result.created
    report.updated += result.updated
    report.subscribed += result.subscribed
    report.rejected += len(reasons)


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
