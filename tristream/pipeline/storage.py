"""The pipeline's side of storage: the store config of a run, checks before it, staging.

All I/O goes through the one storage layer, :mod:`tristream.shards.storage`
(pyarrow's filesystems), for inputs, cache and outputs alike; Beam's
FileSystems are not used. This module adds what only the pipeline needs:

- :func:`configure`: the run's :class:`~tristream.shards.storage.StoreConfig`,
  built once in the launching process from Beam's ``--s3_endpoint_url`` /
  ``--s3_region_name`` when given, else from the environment; the workers get
  it with the run's config, not from their own environment.
- :func:`check_location`: faults of the store (an unknown scheme, a missing
  bucket, an endpoint that does not answer) are checked once, before the
  pipeline starts, and are one :class:`StorageError` line.
- :func:`staged_video`: a local path for ffmpeg to decode and the video's
  content identity (the cache key, see :mod:`tristream.shards.storage`: the
  SHA-256 of its bytes), an object being copied to a bounded temporary file and
  hashed in the same pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import NamedTuple

from tristream.shards.storage import (
    StorageError,
    Store,
    StoreConfig,
    StoreLike,
    content_hash,
    get_store,
    has_scheme,
    is_store_uri,
    is_uri,
    join,
)

__all__ = [
    "STAGE_LIMIT_ENV",
    "Staged",
    "StorageError",
    "Store",
    "StoreConfig",
    "check_location",
    "configure",
    "has_scheme",
    "is_store_uri",
    "is_uri",
    "join",
    "stage_limit",
    "staged_video",
]

#: Environment variable: the largest object (bytes) staged to a local file for decoding.
STAGE_LIMIT_ENV = "TRISTREAM_STAGE_LIMIT"
#: Its default: 16 GiB.
STAGE_LIMIT_DEFAULT = 16 << 30
#: Beam's S3 flags that would carry secrets: tristream takes credentials from the default
#: chain only (:class:`StoreConfig`), never from a flag.
_SECRET_FLAGS = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token")


def configure(options=None) -> StoreConfig:
    """The run's store config: :meth:`StoreConfig.from_env`, with Beam's
    ``--s3_endpoint_url`` and ``--s3_region_name`` in place of the environment's endpoint
    and region when the user gave them. ``options``: Beam's ``PipelineOptions`` (or None).

    Nothing is set process-wide: the config is passed to whatever needs it (and travels
    to the workers with the run's config). Beam's key flags (``--s3_access_key_id``, ...)
    are refused (:class:`StorageError`): credentials come from the default chain.
    """
    config = StoreConfig.from_env()
    if options is None:
        return config
    from apache_beam.options.pipeline_options import S3Options

    s3 = options.view_as(S3Options)
    given = [f"--{name}" for name in _SECRET_FLAGS if getattr(s3, name, None)]
    if given:
        raise StorageError(
            f"{', '.join(given)}: tristream takes S3 credentials from the AWS default chain "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role), "
            "not from flags"
        )
    changes = {}
    if s3.s3_endpoint_url:
        changes["s3_endpoint"] = s3.s3_endpoint_url
    if s3.s3_region_name:
        changes["s3_region"] = s3.s3_region_name
    return dataclasses.replace(config, **changes)


def check_location(path: str | None, what: str, store: StoreLike = None) -> None:
    """Before a run: for a URI, check the scheme, that the bucket exists and that the store
    answers. ``what`` names the flag (``--output``) in the :class:`StorageError`. Nothing
    for None or a local path. ``store``: the run's (a :class:`Store` or its config)."""
    if path is None or not is_uri(path):
        return
    try:
        get_store(store).check_bucket(path)
    except StorageError as exc:
        raise StorageError(f"{what} {exc}") from None


def stage_limit() -> int:
    """The staging limit in bytes: ``$TRISTREAM_STAGE_LIMIT`` (read now), else 16 GiB."""
    value = os.environ.get(STAGE_LIMIT_ENV, "").strip()
    return int(value) if value else STAGE_LIMIT_DEFAULT


class Staged(NamedTuple):
    """A video ready to decode: ``path``, local (or a URL ffmpeg reads itself), and
    ``content_id``, the SHA-256 of its bytes (None when it has none: never reused)."""

    path: str
    content_id: str | None


@contextlib.contextmanager
def staged_video(
    source: str, store: StoreLike = None, limit: int | None = None
) -> Iterator[Staged]:
    """``source`` ready to decode, with its content identity (:class:`Staged`).

    A local path is used as it is, hashed in place; another URL (``http://``) as it is,
    with no identity. An object is copied to a temporary file (in
    :func:`tempfile.gettempdir`, keeping the file name's suffix) and hashed in the same
    pass; the copy is removed when the block ends, however it ends. The copy is bounded:
    an object larger than ``limit`` (default :func:`stage_limit`), or than the free space
    of the temporary folder, is refused before anything is copied (OSError, one line), and
    a copy that grows past the limit stops. A missing object is FileNotFoundError.
    """
    if not is_store_uri(source):  # a local file, or a URL that ffmpeg reads itself
        yield Staged(source, content_hash(source))
        return
    store = get_store(store)
    size = store.getsize(source)
    limit = stage_limit() if limit is None else limit
    folder = tempfile.mkdtemp(prefix="tristream-stage-")
    try:
        free = shutil.disk_usage(folder).free
        if size > limit:
            raise OSError(f"{source} is {size} bytes, over the staging limit of {limit} bytes "
                          f"(${STAGE_LIMIT_ENV})")  # fmt: skip
        if size > free:
            raise OSError(f"{source} is {size} bytes, more than the {free} bytes free in {folder}")
        local = os.path.join(folder, "video" + os.path.splitext(source.rsplit("/", 1)[-1])[1])
        digest = store.download(source, local, limit)
        yield Staged(local, digest)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
