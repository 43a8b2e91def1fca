"""Reading a CSV file as chunks of rows that are mapped and validated, ready for the
database, while the importer writes the previous chunk.

Validating is CPU-bound Python (about 35 µs a row), so for a large file it runs in a helper
process: the GIL would otherwise keep reader and writer on one core. The helper reads the
file itself, in order, from a record boundary, so the byte offset after each chunk stays
exact for `resume`; only the prepared chunk crosses the process boundary (compact tuples,
about 1 µs a row to unpickle). Small files are read in a thread of this process, which
saves the helper's start-up.
"""

from __future__ import annotations

import csv
import gc
import multiprocessing
import queue
import signal
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO

from tidings import errors
from tidings.contacts import bulk
from tidings.contacts.import_columns import Column, row_item

SNIFF_BYTES = 8192
#: Files from this size up are read and validated in a helper process (~30,000 rows).
HELPER_PROCESS_BYTES = 4 * 2**20
_STOP_TIMEOUT = 10.0


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
class CsvSource:
    """Where to read records from: the file, the offset of a record boundary (after the
    header, or where a resumed import stopped), its dialect and the column plan."""

    path: Path
    start: int
    dialect: Any
    plan: Sequence[Column]
    chunk_rows: int


@dataclass
class Chunk:
    """Rows read, mapped and validated, waiting for the database."""

    rows: int  # records in the chunk (blank lines do not count)
    start: int  # file offset of its first record
    offset: int  # file offset just after its last record
    positions: list[int]  # the chunk position of each prepared item
    reasons: dict[int, str]  # rejects found while mapping, by chunk position
    prepared: bulk.Prepared
    #: The cells of every row validation rejected (the rejects file needs them); those of
    #: a row the database step rejects are read again from the file (`Chunk.cells`).
    rejected_cells: dict[int, list[str]] = field(default_factory=dict)

    def cells(self, source: CsvSource, position: int) -> list[str]:
        """The original cells of the row at `position`."""
        if position not in self.rejected_cells:
            records = read_records(source, self.start, self.offset)
            self.rejected_cells.update(enumerate(records))
        return self.rejected_cells[position]


def _records(source: CsvSource, start: int) -> tuple[Iterator[list[str]], ByteCountingLines]:
    raw = source.path.open("rb")
    lines = ByteCountingLines(raw)
    lines.seek(start)
    return csv.reader(lines, source.dialect), lines


def read_records(source: CsvSource, start: int, end: int) -> list[list[str]]:
    """The non-blank records between two record boundaries of the file."""
    reader, lines = _records(source, start)
    with lines.raw:
        found: list[list[str]] = []
        while lines.offset < end:
            cells = next(reader, None)
            if cells is None:
                break
            if cells:
                found.append(cells)
        return found


def read_chunks(source: CsvSource) -> Iterator[Chunk]:
    """The file from `source.start` on, as prepared chunks of `source.chunk_rows` rows."""
    reader, lines = _records(source, source.start)
    with lines.raw:
        chunk: list[list[str]] = []
        start = lines.offset
        try:
            for cells in reader:
                if cells:  # not a blank line
                    chunk.append(cells)
                if len(chunk) >= source.chunk_rows:
                    yield prepare_chunk(chunk, source.plan, start, lines.offset)
                    chunk, start = [], lines.offset
        except csv.Error as exc:  # e.g. a cell beyond csv.field_size_limit(), a NUL byte
            raise errors.InvalidInput.field("file", f"near byte {lines.offset}: {exc}") from None
        if chunk:
            yield prepare_chunk(chunk, source.plan, start, lines.offset)


def prepare_chunk(chunk: list[list[str]], plan: Sequence[Column], start: int, offset: int) -> Chunk:
    """Map and validate the rows of one chunk; keep the cells of the rejected ones."""
    items: list[dict[str, Any]] = []
    positions: list[int] = []
    reasons: dict[int, str] = {}
    for position, cells in enumerate(chunk):
        try:
            items.append(row_item(cells, plan))
            positions.append(position)
        except errors.InvalidInput as exc:
            reasons[position] = exc.message
    prepared = bulk.prepare(items)
    bad = {*reasons, *(positions[r.index] for r in prepared.rejected)}
    return Chunk(
        len(chunk), start, offset, positions, reasons, prepared, {p: chunk[p] for p in bad}
    )


def chunks_ahead(source: CsvSource, helper_process: bool) -> _Ahead:
    """The chunks of `source`, read ahead of the caller (in a helper process or a thread);
    use as a context manager so the reader stops when the caller does."""
    if helper_process:
        return _Ahead(_HelperProcess(source))
    return _Ahead(read_chunks(source))


class _Ahead:
    """Runs a chunk iterator in a thread, at most `depth` chunks ahead: reading and
    validating the next chunk (or receiving it from the helper process) overlaps the
    database writing this one (the drivers release the GIL while they wait). Memory stays
    bounded; errors surface in the caller."""

    def __init__(self, chunks: Iterator[Chunk], depth: int = 2) -> None:
        self._chunks = chunks
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, name="tidings-import-reader", daemon=True
        )

    def _produce(self) -> None:
        try:
            for chunk in self._chunks:
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

    def __enter__(self) -> Iterator[Chunk]:
        self._thread.start()
        return self._consume()

    def _consume(self) -> Iterator[Chunk]:
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if isinstance(self._chunks, _HelperProcess):
            self._chunks.stop()  # ends a wait for the helper's next chunk
        self._thread.join()
        if isinstance(self._chunks, Generator):
            self._chunks.close()  # its file


class _HelperProcess(Iterator[Chunk]):
    """`read_chunks(source)` run in a child process, its chunks received over a pipe.

    The child is started from a fork server (fast, and safe although this process has
    threads); it ignores SIGINT, since the importer decides when to stop, and exits when
    the pipe closes."""

    def __init__(self, source: CsvSource) -> None:
        context = _context()
        receiver, sender = context.Pipe(duplex=False)
        self._receiver = receiver
        self._process = context.Process(
            target=_send_chunks, args=(source, sender), name="tidings-import-reader", daemon=True
        )
        self._process.start()
        sender.close()  # the child holds the only sending end: EOF when it is gone

    def __next__(self) -> Chunk:
        try:
            kind, value = self._receiver.recv()
        except (EOFError, OSError):
            raise RuntimeError("the import's reader process stopped unexpectedly") from None
        if kind == "end":
            raise StopIteration
        if kind == "error":
            raise value
        chunk: Chunk = value
        return chunk

    def stop(self) -> None:
        """End the child (it only reads the file, so stopping it anywhere is safe)."""
        self._process.terminate()
        self._process.join(_STOP_TIMEOUT)
        self._receiver.close()


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # later children start without imports
    return context


def _send_chunks(source: CsvSource, sender: Connection) -> None:
    """The helper process: every chunk, then `end` (or the error), down the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Only short-lived objects here: leave the inherited modules out of collections and
    # collect less often (a collection every 700 allocations cost ~15 % of this process).
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        for chunk in read_chunks(source):
            sender.send(("chunk", chunk))
        sender.send(("end", None))
    except Exception as exc:  # handed over to the importer
        sender.send(("error", exc))
    finally:
        sender.close()
