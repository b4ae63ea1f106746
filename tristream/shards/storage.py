"""Where shard files live: local paths, or ``s3://`` and ``gs://`` object-store URIs.

The one home of paths and URIs on the shard side (writer and trainer-side
reader alike), through pyarrow's filesystems; no Beam (the pipeline reads its
inputs through Beam's ``FileSystems``, see :mod:`tristream.pipeline.storage`).

- A local path is used exactly as before (``os`` and ``open``).
- ``s3://bucket/key``: :class:`pyarrow.fs.S3FileSystem`. An S3-compatible
  endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (or
  :func:`set_s3_endpoint`, which the pipeline calls for Beam's
  ``--s3_endpoint_url``); credentials and region from the usual AWS sources
  (environment, ``~/.aws``, instance metadata).
- ``gs://bucket/key``: :class:`pyarrow.fs.GcsFileSystem` with Google's default
  credentials; a GCS emulator comes from ``STORAGE_EMULATOR_HOST`` (the
  variable Google's own client libraries, and so Beam's GCS filesystem, read),
  reached without credentials. A call that the store does not answer is retried
  for :data:`GCS_RETRY_SECONDS` (pyarrow's own default is 15 minutes), the
  check before a run for :data:`GCS_CHECK_SECONDS`.

Object stores have no rename, so :func:`upload` writes the final object in
one go, from a complete local file (see :mod:`tristream.shards.atomic`).
Faults of the store itself (an unknown scheme, a missing bucket, an endpoint
that does not answer) are :class:`StorageError`: one readable line.
"""

from __future__ import annotations

import datetime
import functools
import os
import re
import shutil
from typing import IO
from urllib.parse import urlsplit

import pyarrow.fs as pafs

#: The object-store URI schemes tristream reads and writes.
SCHEMES: tuple[str, ...] = ("s3", "gs")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_s3_endpoint: str | None = None
#: Environment variable: a GCS emulator's address (``http://host:port``), as Google's
#: client libraries read it.
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
#: How long (seconds) a GCS call is retried while the store does not answer, and how long
#: the check before a run (:func:`check_bucket`) waits.
GCS_RETRY_SECONDS = 60
GCS_CHECK_SECONDS = 10
_STORE_ERRORS = {
    "NO_SUCH_BUCKET": "bucket does not exist",
    "NoSuchBucket": "bucket does not exist",
    "ACCESS_DENIED": "access denied",
    "AccessDenied": "access denied",
    "PERMISSION_DENIED": "access denied",
    "UNAUTHENTICATED": "no valid credentials",
    "NETWORK_CONNECTION": "cannot connect to the object store",
    "Could not connect to server": "cannot connect to the object store",
    "INVALID_ACCESS_KEY_ID": "the access key is not valid",
    "SIGNATURE_DOES_NOT_MATCH": "the secret key does not match",
}


class StorageError(RuntimeError):
    """A fault of the storage itself (bad URI scheme, missing bucket, store unreachable),
    as opposed to a missing file; the message is one readable line."""


def uri_scheme(path: str | os.PathLike) -> str | None:
    """``"s3"`` or ``"gs"`` for an object-store URI, None for a local path.

    Raises :class:`StorageError` for any other ``scheme://`` (``gcs://`` is read as ``gs``).
    """
    match = _URI.match(os.fspath(path))
    if match is None:
        return None
    scheme = match.group(1).lower()
    scheme = "gs" if scheme == "gcs" else scheme
    if scheme not in SCHEMES:
        raise StorageError(
            f"{os.fspath(path)}: unsupported URI scheme '{match.group(1)}://' "
            "(use a local path, s3://bucket/... or gs://bucket/...)"
        )
    return scheme


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an object-store URI (see :func:`uri_scheme`; raises likewise)."""
    return uri_scheme(path) is not None


def has_scheme(path: str | os.PathLike) -> bool:
    """Whether ``path`` is any ``scheme://`` URL (never raises): not a local path."""
    return _URI.match(os.fspath(path)) is not None


def is_store_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ``s3://`` or ``gs://`` URI; False for a local path and for
    other URLs (``http://``, which ffmpeg reads itself), without raising."""
    return has_scheme(path) and _URI.match(os.fspath(path)).group(1).lower() in (*SCHEMES, "gcs")


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base`` and ``parts`` joined with ``/`` (a URI) or :func:`os.path.join` (a local path)."""
    base = os.fspath(base)
    if not is_uri(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])


def relative(path: str, root: str) -> str:
    """``path`` relative to the folder ``root`` (:func:`os.path.relpath` for local paths)."""
    if not is_uri(path):
        return os.path.relpath(path, root)
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def bucket_of(uri: str) -> str:
    """The bucket name of an object-store URI."""
    return uri.split("://", 1)[1].split("/", 1)[0]


def set_s3_endpoint(url: str | None) -> None:
    """Use ``url`` (e.g. ``http://127.0.0.1:9000``) as the S3 endpoint in this process,
    before ``AWS_ENDPOINT_URL``; None goes back to the environment."""
    global _s3_endpoint
    _s3_endpoint = url or None


def s3_endpoint() -> str | None:
    """The S3-compatible endpoint in use: :func:`set_s3_endpoint`, else ``AWS_ENDPOINT_URL_S3``,
    else ``AWS_ENDPOINT_URL``; None for AWS itself."""
    return (
        _s3_endpoint
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


def gcs_emulator() -> str | None:
    """The GCS emulator in use (``$STORAGE_EMULATOR_HOST``, e.g. ``http://127.0.0.1:9023``);
    None for Google Cloud Storage itself."""
    return os.environ.get(GCS_EMULATOR_ENV) or None


def endpoint_of(path: str) -> str | None:
    """The endpoint that serves the URI ``path`` when it is not the cloud's own (an
    S3-compatible server, a GCS emulator); None otherwise and for a local path."""
    scheme = uri_scheme(path)
    if scheme == "s3":
        return s3_endpoint()
    return gcs_emulator() if scheme == "gs" else None


@functools.lru_cache(maxsize=8)
def _filesystem(
    scheme: str, endpoint: str | None, region: str | None, retry_seconds: int = GCS_RETRY_SECONDS
) -> pafs.FileSystem:
    if scheme == "gs":
        retry = datetime.timedelta(seconds=retry_seconds)
        if endpoint is None:
            return pafs.GcsFileSystem(retry_time_limit=retry)
        url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        return pafs.GcsFileSystem(anonymous=True, scheme=url.scheme, endpoint_override=url.netloc,
                                  retry_time_limit=retry)  # fmt: skip
    retry = pafs.AwsStandardS3RetryStrategy(max_attempts=3)
    if endpoint is None:
        return pafs.S3FileSystem(region=region, connect_timeout=10, retry_strategy=retry)
    # An S3-compatible server: any region name is accepted, and its own endpoint is used.
    return pafs.S3FileSystem(
        endpoint_override=endpoint, region=region or "us-east-1", connect_timeout=10,
        retry_strategy=retry,
    )  # fmt: skip


def resolve(
    path: str | os.PathLike, retry_seconds: int = GCS_RETRY_SECONDS
) -> tuple[pafs.FileSystem | None, str]:
    """``(filesystem, path inside it)``: ``(None, path)`` for a local path, else the
    pyarrow filesystem of the URI's scheme and ``bucket/key``. ``retry_seconds``: how long
    a GCS call is retried while the store does not answer."""
    path = os.fspath(path)
    scheme = uri_scheme(path)
    if scheme is None:
        return None, path
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    fs = _filesystem(scheme, endpoint_of(path), region, retry_seconds)
    return fs, path.split("://", 1)[1]


def store_error(exc: BaseException, path: str) -> StorageError:
    """A one-line :class:`StorageError` for a store fault ``exc`` met at ``path``."""
    text = " ".join(str(exc).split())
    for code, reason in _STORE_ERRORS.items():
        if code in text:
            if reason == "bucket does not exist":
                reason = f"bucket '{bucket_of(path)}' does not exist"
            elif reason.startswith("cannot connect"):
                where = endpoint_of(path)
                reason += f" at {where}" if where else ""
            return StorageError(f"{path}: {reason}")
    return StorageError(f"{path}: {text}")


def _info(path: str, retry_seconds: int = GCS_RETRY_SECONDS) -> pafs.FileInfo:
    fs, inner = resolve(path, retry_seconds)
    try:
        return fs.get_file_info(inner)
    except OSError as exc:
        raise store_error(exc, path) from exc


def check_bucket(path: str) -> None:
    """For a URI, check that its bucket exists and the store answers; nothing for a local path.

    Raises :class:`StorageError` (one line) otherwise.
    """
    if not is_uri(path):
        return
    scheme = uri_scheme(path)
    bucket = bucket_of(path)
    if not bucket:
        raise StorageError(f"{path}: no bucket in the URI (expected {scheme}://bucket/...)")
    if _info(f"{scheme}://{bucket}", GCS_CHECK_SECONDS).type == pafs.FileType.NotFound:
        raise StorageError(f"{path}: bucket '{bucket}' does not exist")


def isfile(path: str) -> bool:
    """Whether ``path`` is a file (an object)."""
    if not is_uri(path):
        return os.path.isfile(path)
    return _info(path).type == pafs.FileType.File


def isdir(path: str) -> bool:
    """Whether ``path`` is a folder (on an object store: a prefix that holds objects)."""
    if not is_uri(path):
        return os.path.isdir(path)
    return _info(path).type == pafs.FileType.Directory


def exists(path: str) -> bool:
    """Whether ``path`` is a file or a folder."""
    if not is_uri(path):
        return os.path.exists(path)
    return _info(path).type != pafs.FileType.NotFound


def getsize(path: str) -> int:
    """The size of a file in bytes; FileNotFoundError when there is none."""
    if not is_uri(path):
        return os.path.getsize(path)
    info = _info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"no such file: {path}")
    return int(info.size)


def list_dir(folder: str) -> list[str]:
    """The names of the files directly in ``folder``, sorted ([] for a missing folder)."""
    if not is_uri(folder):
        if not os.path.isdir(folder):
            return []
        return sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))
    fs, inner = resolve(folder)
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner.rstrip("/"), allow_not_found=True))
    except OSError as exc:
        raise store_error(exc, folder) from exc
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)


def makedirs(folder: str) -> None:
    """Create a local folder (and its parents); nothing for a URI (prefixes need no creating)."""
    if not is_uri(folder):
        os.makedirs(folder, exist_ok=True)


def remove(path: str) -> None:
    """Delete one file; a missing one is not an error."""
    if not is_uri(path):
        if os.path.exists(path):
            os.remove(path)
        return
    fs, inner = resolve(path)
    try:
        fs.delete_file(inner)
    except FileNotFoundError:
        pass


def remove_tree(folder: str) -> None:
    """Delete a folder and everything under it; errors are ignored (best effort)."""
    if not is_uri(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return
    fs, inner = resolve(folder)
    try:
        fs.delete_dir(inner.rstrip("/"))
    except OSError:
        pass


def open_input(path: str, seekable: bool = True) -> IO[bytes]:
    """Open a file for binary reading (a context manager with ``read``, and ``seek`` /
    ``tell`` when ``seekable``; a sequential stream reads ahead in 1 MiB blocks)."""
    if not is_uri(path):
        return open(path, "rb")
    fs, inner = resolve(path)
    try:
        if seekable:
            return fs.open_input_file(inner)
        return _Stream(fs.open_input_stream(inner, compression=None, buffer_size=1 << 20))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except OSError as exc:
        raise store_error(exc, path) from exc


class _Stream:
    """A sequential pyarrow input stream that counts its position (``tell``)."""

    def __init__(self, stream):
        self._stream = stream
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_text(path: str) -> str:
    """A whole file as UTF-8 text."""
    with open_input(path, seekable=False) as f:
        return f.read().decode("utf-8")


def upload(local: str, path: str) -> None:
    """Copy the complete local file ``local`` to the URI ``path`` as one object.

    The copy runs in pyarrow's C++ code from open to close (a single PUT, or a
    multipart upload completed at the end), so the object appears whole once
    the call returns; a process killed before that leaves no object.
    """
    fs, inner = resolve(path)
    try:
        pafs.copy_files(local, inner, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)  # fmt: skip
    except OSError as exc:
        raise store_error(exc, path) from exc
