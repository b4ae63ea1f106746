"""One run per output: a lock file in the output folder, held for the whole run.

``OUT/.tristream.lock`` holds JSON ``{host, pid, started, config_hash, command}``. A run
creates it before any work (an exclusive create on a local folder, so two runs that
start at once cannot both get it) and removes it when it ends, however it ends. A
second run on the same output fails at start with one line naming the holder. A lock
whose process is gone (same host, no such pid) is stale: the next run takes it over,
with a warning.

On an object store (``s3://``, ``gs://``) there is no exclusive create through
pyarrow, so the lock object is advisory: it is checked and written at start and a
second run that sees it stops (a holder on this host whose process is gone is taken
over, as locally), but two runs started within the same moment can both pass the
check, and a holder on another host cannot be checked for liveness (remove the object
by hand if that run is gone). Do not start two runs on one bucket prefix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator

from tristream.shards import storage
from tristream.shards.atomic import write_text_atomic
from tristream.shards.storage import StoreLike

LOG = logging.getLogger(__name__)
LOCK_NAME = ".tristream.lock"


class OutputLocked(RuntimeError):
    """Another run holds the output's lock; the message is one readable line."""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _record(config_hash: str) -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_hash": config_hash,
        "command": " ".join(sys.argv),
    }


def _holder_text(path: str, holder: dict) -> str:
    return (
        f"{os.path.dirname(path) or path} is in use by another tristream run (host "
        f"{holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
        f"{holder.get('started', '?')}, config {holder.get('config_hash', '?')}); wait for it "
        f"to end, or remove {path} if that run is gone"
    )


def _read(path: str, store: StoreLike = None) -> dict:
    try:
        if storage.is_uri(path):
            text = storage.read_text(path, store)
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        return json.loads(text)
    except (OSError, ValueError):
        return {}


def _stale(holder: dict) -> bool:
    """A holder on this host whose process is gone (or an unreadable lock file)."""
    if not holder:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        return not _alive(int(holder["pid"]))
    except (KeyError, TypeError, ValueError):
        return True


def _warn_takeover(holder: dict) -> None:
    LOG.warning(
        "taking over the lock of a run that is gone (host %s, pid %s, started %s)",
        holder.get("host", "?"), holder.get("pid", "?"), holder.get("started", "?"),
    )  # fmt: skip


def acquire(output: str, config_hash: str, store: StoreLike = None) -> str:
    """Take the lock of ``output`` (created if needed; an object store's through ``store``);
    returns the lock's path.

    Raises :class:`OutputLocked` when a live run holds it. A stale lock (its process is
    gone) is taken over with a warning.
    """
    path = storage.join(output, LOCK_NAME)
    record = json.dumps(_record(config_hash), indent=1) + "\n"
    if storage.is_uri(path):  # advisory on object stores (module docstring)
        if storage.exists(path, store):
            holder = _read(path, store)
            if not _stale(holder):
                raise OutputLocked(_holder_text(path, holder))
            _warn_takeover(holder)
        write_text_atomic(path, record, store)
        return path
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            holder = _read(path)
            if not _stale(holder):
                raise OutputLocked(_holder_text(path, holder)) from None
            _warn_takeover(holder)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return path
    raise OutputLocked(_holder_text(path, _read(path)))


def release(path: str, store: StoreLike = None) -> None:
    """Remove the lock at ``path`` if this process still holds it."""
    holder = _read(path, store)
    if holder and (holder.get("pid") != os.getpid() or holder.get("host") != socket.gethostname()):
        return  # taken over by another run: not ours to remove
    with contextlib.suppress(FileNotFoundError, OSError):
        if storage.is_uri(path):
            storage.remove(path, store)
        else:
            os.remove(path)


@contextlib.contextmanager
def output_lock(output: str, config_hash: str, store: StoreLike = None) -> Iterator[str]:
    """Hold the lock of ``output`` for the block (see :func:`acquire`)."""
    path = acquire(output, config_hash, store)
    try:
        yield path
    finally:
        release(path, store)
