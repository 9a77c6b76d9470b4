"""Atomic file writes (a reader or a killed run never sees a half-written file), and the lock
beside an SQLite file that processes sharing it take."""

import csv
import fcntl
import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml


def write_atomic(path: Path, write: Callable[[Path], None], keep_previous: Path | None = None) -> None:
    """Write through write(tmp_path), flush it to disk, then rename it over path.

    With keep_previous, the old file is first renamed there: a kill between the two renames
    leaves the old file under that name, never no file at all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    if keep_previous is not None and path.exists():
        os.replace(path, keep_previous)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, out.getvalue())


def write_yaml(path: Path, data) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def save_torch(path: Path, obj, keep_previous: Path | None = None) -> None:
    write_atomic(path, lambda tmp: torch.save(obj, tmp), keep_previous)


@contextmanager
def sqlite_file_lock(url: str) -> Iterator[None]:
    """Hold an exclusive flock on `<file>.lock` beside the SQLite file of a sqlite:/// URL (its
    folder made first), for processes that must not race on that database; nothing for other URLs."""
    if not url.startswith("sqlite:///"):
        yield
        return
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
