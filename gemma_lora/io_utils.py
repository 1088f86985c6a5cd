"""File input and output: UTF-8 text read with clear errors, and atomic writes.

`read_text` decodes a text file as UTF-8 and names the file, line and byte
when it cannot; the writers make a file (or folder) either complete or
absent, never half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from gemma_lora.errors import DataError

# Leading bytes of files that are not UTF-8 text, and what they are.
_NOT_UTF8_TEXT = {
    b"\x1f\x8b": "the file is gzip-compressed (decompress it first, e.g. with gunzip)",
    b"PK\x03\x04": "the file is a ZIP archive, e.g. an Excel workbook (export it as CSV)",
    b"\xff\xfe": "the file is UTF-16 text (re-save it as UTF-8)",
    b"\xfe\xff": "the file is UTF-16 text (re-save it as UTF-8)",
}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file, fsync and rename.

    Args:
        path: destination file; its folder is created if missing.
        text: the full contents.

    Example:
    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> write_text_atomic(folder / "notes" / "example.txt", "hello")  # makes notes/ too
    >>> (folder / "notes" / "example.txt").read_text()
    'hello'
    """
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file next to `path` to write; fsynced and renamed to `path` at the end.

    Whatever was at `path` is replaced only once the block finishes without an
    error; an interrupted block leaves the old file (or nothing) in place and
    removes the temporary one.

    Args:
        path: destination file; its folder is created if missing.

    Yields:
        The temporary file's path (an empty file, in the usual mode).

    Example:
    >>> import tempfile; path = Path(tempfile.mkdtemp()) / "weights.bin"
    >>> with atomic_file(path) as tmp:
    ...     _ = tmp.write_bytes(b"\\x00\\x01")
    >>> path.read_bytes(), [p.name for p in path.parent.iterdir()]
    (b'\\x00\\x01', ['weights.bin'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; use the usual mode.
        yield Path(tmp)
        with open(tmp, "rb") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write `value` as indented JSON to `path`, atomically."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write one JSON object per line to `path` (UTF-8, not escaped), atomically.

    Example:
    >>> import tempfile; path = Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> write_jsonl_atomic(path, [{"text": "café", "label": "positive"}, {"text": "bof"}])
    >>> print(path.read_text(encoding="utf-8"), end="")
    {"text": "café", "label": "positive"}
    {"text": "bof"}
    """
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name, then swap it into `path`.

    Whatever was at `path` is replaced only once the block finishes without an
    error; an interrupted block leaves the old folder (or nothing) in place.

    Args:
        path: the folder to create or replace.

    Yields:
        The temporary folder to write into.

    Example:
    >>> import tempfile; adapter = Path(tempfile.mkdtemp()) / "adapter"
    >>> with atomic_directory(adapter) as folder:
    ...     _ = (folder / "weights.txt").write_text("...")
    >>> [path.name for path in adapter.iterdir()]  # there only once complete
    ['weights.txt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as file:
                    os.fsync(file.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_text(path: str | os.PathLike) -> str:
    """The file decoded as UTF-8; a leading byte order mark (as Excel writes) is dropped.

    Args:
        path: the file to read.

    Returns:
        The file's text, line endings unchanged.

    Raises:
        DataError: the file cannot be read, is compressed, a ZIP archive or
            UTF-16 text, or holds a byte that is not UTF-8; the message names
            the file (and for a bad byte its line and position in the line).

    Example:
    >>> import tempfile; path = Path(tempfile.mkdtemp()) / "bom.txt"
    >>> _ = path.write_bytes(b"\\xef\\xbb\\xbfcaf\\xc3\\xa9")  # a BOM, then UTF-8
    >>> read_text(path)
    'café'
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror}).") from None
    for magic, kind in _NOT_UTF8_TEXT.items():
        if data.startswith(magic):
            raise DataError(f"{path}: {kind}; expected UTF-8 text.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        byte = data[error.start:error.start + 1]
        raise DataError(
            f"{path}:{line}: invalid UTF-8 byte {byte!r} at byte {column} of the line; "
            "expected UTF-8 text (re-save the file as UTF-8)."
        ) from None
