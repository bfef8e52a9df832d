"""Artifact I/O: every result file is written atomically (temp file in the same folder + rename)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

# a line printed with this prefix inside a notebook is repeated on the terminal of ``python -m utils.run``
# (``utils.progress``): what a user must hear of at once (files moved aside or removed), not only in the copy
NOTICE = "[emocause] notice: "


def notice(message: str) -> None:
    """Print ``message`` as a notice: in a notebook run by ``utils.run`` it also reaches the terminal."""
    print(NOTICE + message, flush=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OutputPathError(ValueError):
    """An output path a command cannot write: a folder where a file goes, a file where a folder goes, a parent
    that is a file or that this user may not write in."""


def check_output(path: str | os.PathLike, flag: str, folder: bool = False, example: str = "out.json") -> Path:
    """``path`` where a command will write a file (with ``folder``: a folder, replaced whole); raise
    OutputPathError naming ``flag`` and the path where it cannot, so a command fails before its model loads,
    not after the work is done."""
    path = Path(path)
    if not folder and path.is_dir():
        raise OutputPathError(f"{flag} {path} is a folder; give a file path such as {path / example}")
    if folder and path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {path} is a file; give a folder (it is made, or replaced whole)")
    parent = path.absolute().parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())  # the rest is made on writing
    if not existing.is_dir():
        raise OutputPathError(f"{flag} {path}: {existing} is a file, not a folder; give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: this user may not write in {existing}; give another path")
    return path


def temp_dir_beside(path: str | os.PathLike) -> Path:
    """A new empty folder beside ``path`` (its parent made if missing), to be renamed onto it once whole; with
    the umask's usual mode, since mkdtemp's 0700 would stay on the finished folder and hide it from others."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())
    return tmp


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp_path, path)  # atomic on POSIX and Windows within one filesystem
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text so that readers see either the old file or the whole new one."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Serialise ``obj`` first (so a serialisation error leaves no file), then write atomically."""
    text = json.dumps(obj, ensure_ascii=False, indent=indent)  # keep non-ASCII text readable
    return write_text_atomic(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a UTF-8 JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and fsync it: the checkpoint format of resumable loops."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read JSON lines, ignoring a torn last line left by a kill mid-write."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # only the last line can be torn: everything after it is unwritten
    return records


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Content hash of one file; size and mtime in the key make the memo safe against edits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a folder's files' bytes in name order; memoised per file
    (path, size, mtime), so hashing a multi-GB model twice costs one read."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if len(files) == 1 and files[0] == path:
        stat = path.stat()
        return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Busy(RuntimeError):
    """Another process holds the folder this one wants to write."""


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``folder/.lock`` for the duration (advisory, released when the process dies, even by kill -9):
    a second run on the same folder stops with a message instead of racing on its files."""
    import fcntl  # POSIX only (Kaggle, Colab, Linux, macOS): imported where it is used

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise Busy(f"{folder} is in use by {holder}: wait for it to finish, or give this {what} "
                       "its own folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{what} pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet would run as a formula


def spreadsheet_safe(value: Any) -> Any:
    """Dataset text for a CSV that people open in a spreadsheet: a string that would start a formula gets a
    leading apostrophe (shown as text, never evaluated); numbers and other values pass unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def write_csv(frame: Any, path: str | os.PathLike) -> Path:
    """A pandas frame as UTF-8 CSV, written atomically, every text cell ``spreadsheet_safe``."""
    with atomic_path(path) as tmp:
        frame.map(spreadsheet_safe).to_csv(tmp, index=False, encoding="utf-8")
    return Path(path)

