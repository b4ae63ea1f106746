"""The pipeline's inputs on any storage: local paths, ``s3://`` and ``gs://`` (Beam's FileSystems).

The one home of URIs in the pipeline layer. Inputs (``--input`` listings,
``--manifest`` text, the videos themselves and their content keys) are read
through Beam's :class:`~apache_beam.io.filesystems.FileSystems`, so whatever
filesystem Beam has (S3 with ``apache-beam[aws]``, GCS with
``apache-beam[gcp]``) serves them, configured by Beam's own flags
(``--s3_endpoint_url``, ``--s3_region_name``, ...). The outputs (cache,
shards, ``manifest.json``, ``failures.jsonl``) are written by the shard layer
(:mod:`tristream.shards.storage`, pyarrow), which the trainer-side reader shares.

Faults of the store (an unknown scheme, a missing bucket, an endpoint that
does not answer) are checked once, before the pipeline starts
(:func:`check_location`), and are one :class:`StorageError` line, because
Beam's S3 client retries such faults with backoff for minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options

from tristream.config import content_hash
from tristream.shards import storage
from tristream.shards.storage import (
    StorageError,
    has_scheme,
    is_store_uri,
    is_uri,
    join,
    uri_scheme,
)

__all__ = [
    "STAGE_LIMIT_ENV",
    "StorageError",
    "check_location",
    "configure",
    "content_id",
    "exists",
    "has_scheme",
    "is_store_uri",
    "is_uri",
    "join",
    "match",
    "read_text",
    "staged_video",
]

#: Environment variable: the largest object (bytes) staged to a local file for decoding.
STAGE_LIMIT_ENV = "TRISTREAM_STAGE_LIMIT"
#: Its default: 16 GiB.
STAGE_LIMIT_DEFAULT = 16 << 30
_CHUNK = 8 << 20
#: scheme -> what to install for Beam's filesystem of it.
_EXTRAS = {"s3": "apache-beam[aws]", "gs": "tristream[gcp]"}


def configure(options: PipelineOptions) -> None:
    """Give Beam's FileSystems the run's options, and the shard layer Beam's
    ``--s3_endpoint_url`` when one is given (else both read ``AWS_ENDPOINT_URL``).

    The endpoint is also exported as ``AWS_ENDPOINT_URL`` when that is unset, so
    worker processes started from this one agree.
    """
    FileSystems.set_options(options)
    endpoint = options.view_as(S3Options).s3_endpoint_url
    if endpoint:
        storage.set_s3_endpoint(endpoint)
        os.environ.setdefault("AWS_ENDPOINT_URL", endpoint)


def _ready() -> None:
    """Give Beam's FileSystems default options (endpoint and credentials from the
    environment) in a worker process where nothing set them (e.g. a Dask worker)."""
    if getattr(FileSystems, "_pipeline_options", None) is None:
        FileSystems.set_options(PipelineOptions([]))


def _beam_filesystem(path: str) -> None:
    """Check that Beam has a filesystem for the URI's scheme; StorageError naming the extra."""
    _ready()
    try:
        FileSystems.get_filesystem(path)
    except ValueError:
        scheme = uri_scheme(path)
        raise StorageError(
            f"{path}: Beam has no {scheme}:// filesystem here; install it with "
            f"pip install '{_EXTRAS[scheme]}'"
        ) from None


def check_location(path: str | None, what: str) -> None:
    """Before a run: for a URI, check the scheme, Beam's filesystem for it, that the bucket
    exists and that the store answers. ``what`` names the flag (``--output``) in the
    :class:`StorageError`. Nothing for None or a local path."""
    if path is None or not is_uri(path):
        return
    _beam_filesystem(path)
    try:
        storage.check_bucket(path)
    except StorageError as exc:
        raise StorageError(f"{what} {exc}") from None


def exists(path: str) -> bool:
    """Whether a file (or object) exists at ``path``."""
    if not is_uri(path):
        return os.path.exists(path)
    _ready()
    return FileSystems.exists(path)


def match(pattern: str) -> list[tuple[str, int]]:
    """``(path, size in bytes)`` of every object matching the glob ``pattern`` (``*``, ``?``,
    ``**`` across ``/``), sorted by path."""
    _ready()
    found = FileSystems.match([pattern])[0].metadata_list
    return sorted((m.path, int(m.size_in_bytes)) for m in found)


def read_text(path: str) -> str:
    """A whole file (a manifest) as UTF-8 text."""
    _ready()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read().decode("utf-8")


def _size(uri: str) -> int:
    _ready()
    found = FileSystems.match([uri])[0].metadata_list
    if not found:
        raise FileNotFoundError(f"file not found: {uri}")
    return int(found[0].size_in_bytes)


def content_id(source: str) -> str | None:
    """What identifies the content of a video for the cache key.

    A local file: the SHA-256 of its bytes (:func:`tristream.config.content_hash`;
    None for a pipe or a device, which are never reused). An object: the store's
    checksum metadata with the object's size (S3: the ETag, an MD5 of the bytes
    for a single-part upload and of the parts otherwise; GCS: the CRC32C that
    Beam's GCS filesystem reports), read without downloading the video; the SHA-256 of the
    bytes when the store gives no checksum. None for a missing object.
    """
    if not is_store_uri(source):
        return content_hash(source)  # None for other URLs (http://): never reused
    try:
        size = _size(source)
    except FileNotFoundError:
        return None  # as for a missing local file: the decode reports it
    checksum = FileSystems.checksum(source)
    if checksum:
        return f"{uri_scheme(source)}-checksum:{checksum.strip(chr(34))}:{size}"
    digest = hashlib.sha256()
    with FileSystems.open(source, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stage_limit() -> int:
    """The staging limit in bytes: ``$TRISTREAM_STAGE_LIMIT``, else 16 GiB."""
    value = os.environ.get(STAGE_LIMIT_ENV, "").strip()
    return int(value) if value else STAGE_LIMIT_DEFAULT


@contextlib.contextmanager
def staged_video(source: str) -> Iterator[str]:
    """A local path to decode ``source`` from: the path itself, or, for an object, a
    temporary copy (in :func:`tempfile.gettempdir`, keeping the file name's suffix)
    that is removed when the block ends, however it ends.

    The copy is bounded: an object larger than :func:`stage_limit`, or than the
    free space of the temporary folder, is refused before anything is copied
    (OSError, one line), and a copy that grows past the limit stops.
    """
    if not is_store_uri(source):  # a local file, or a URL that ffmpeg reads itself
        yield source
        return
    size, limit = _size(source), stage_limit()
    folder = tempfile.mkdtemp(prefix="tristream-stage-")
    try:
        free = shutil.disk_usage(folder).free
        if size > limit:
            raise OSError(f"{source} is {size} bytes, over the staging limit of {limit} bytes "
                          f"(${STAGE_LIMIT_ENV})")  # fmt: skip
        if size > free:
            raise OSError(f"{source} is {size} bytes, more than the {free} bytes free in {folder}")
        local = os.path.join(folder, "video" + os.path.splitext(source.rsplit("/", 1)[-1])[1])
        copied = 0
        with (
            FileSystems.open(source, compression_type=CompressionTypes.UNCOMPRESSED) as src,
            open(local, "wb") as dst,
        ):
            while chunk := src.read(_CHUNK):
                copied += len(chunk)
                if copied > limit:
                    raise OSError(f"{source} grew past the staging limit of {limit} bytes")
                dst.write(chunk)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)
