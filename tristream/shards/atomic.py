"""Files that appear complete or not at all.

A local file is written to a temporary name beside it, then renamed. An
object-store URI (``s3://``, ``gs://``: no rename there) is written to a local
temporary file, which is uploaded as the final object in one go once complete
(:func:`tristream.shards.storage.upload`), then removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from tristream.shards import storage
from tristream.shards.storage import StoreLike


@contextlib.contextmanager
def atomic_path(path: str, store: StoreLike | Callable[[], StoreLike] = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    The temporary name starts with ``.`` and ends with ``.tmp`` so that globs
    for shards never see it. For an object-store URI the temporary file is
    local (in :func:`tempfile.gettempdir`) and is uploaded to ``path`` on success, on
    ``store`` (a :class:`~tristream.shards.storage.Store` or its config, or a function
    that gives one then; None: the environment's); it is removed in every case.
    """
    if storage.is_uri(path):
        fd, tmp = tempfile.mkstemp(prefix=".tristream-", suffix=".tmp")
        os.close(fd)
        try:
            yield tmp
            storage.upload(tmp, path, store() if callable(store) else store)
        finally:
            os.remove(tmp)
        return
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str, text: str, store: StoreLike = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (a URI: on ``store``, see
    :func:`atomic_path`)."""
    with atomic_path(path, store) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


class AtomicRowWriter:
    """Base of the shard writers: rows go to a temporary file beside ``path``, which
    becomes ``path`` only when :meth:`close` (or a ``with`` block) ends without an
    exception; :meth:`abort` (or an exception in the block) leaves no file behind.

    Subclasses open their output on ``self.tmp_path`` and implement :meth:`write`
    (counting ``self.rows``) and :meth:`_close_output`. ``store``: where a URI ``path``
    is uploaded (see :func:`atomic_path`), read when the file is finished, so it may be
    set after construction (:func:`~tristream.shards.files.open_shard_writer` does).
    """

    def __init__(self, path: str, store: StoreLike = None):
        self.path = path
        self.store = store
        self._atomic = atomic_path(path, lambda: self.store)
        self.tmp_path = self._atomic.__enter__()
        self.rows = 0
        #: SHA-256 (hex) of the published file's bytes, taken from the local temporary
        #: file just before it is published (no read-back of an uploaded object).
        self.sha256: str | None = None

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        raise NotImplementedError

    def _close_output(self) -> None:
        """Flush and close the output opened on ``self.tmp_path``."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file and move it to ``path``."""
        self._close_output()
        self.publish()

    def publish(self) -> None:
        """Move the finished temporary file to ``path`` (its SHA-256 in :attr:`sha256`)."""
        self.sha256 = storage.content_hash(self.tmp_path)
        self._atomic.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        """Drop the temporary file; ``path`` is left as it was."""
        self._close_output()
        self._atomic.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> AtomicRowWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)
