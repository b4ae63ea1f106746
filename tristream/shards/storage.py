"""The one storage layer: local paths, and ``s3://`` / ``gs://`` object-store URIs.

Inputs (``--input`` listings, ``--manifest``, the videos), the cache, the shards,
``manifest.json`` and ``failures.jsonl``, ``--skeletons`` and the trainer-side
readers all go through this module, on pyarrow's filesystems; no Beam (a trainer
imports :mod:`tristream.shards` without it).

Configuration is explicit: a :class:`StoreConfig` (a frozen, picklable dataclass:
endpoints, region, retries, where credentials come from; no secrets) says how to
reach the stores, and a :class:`Store` built from it does the operations,
holding its pyarrow filesystems itself. :meth:`StoreConfig.from_env` is the one
place that reads the environment (at call time, never at import); the pipeline
builds its config once, in the launching process (from Beam's ``--s3_*`` flags
or the environment, :func:`tristream.pipeline.storage.configure`), and hands it
to the workers with the run's config. The module-level functions (:func:`isfile`,
:func:`open_input`, ...) take an optional ``store`` (a :class:`Store` or a
:class:`StoreConfig`); without one they use the store of
:meth:`StoreConfig.from_env`, read at that call.

- A local path is used exactly as before (``os`` and ``open``).
- ``s3://bucket/key``: :class:`pyarrow.fs.S3FileSystem`, on AWS or on an
  S3-compatible server (:attr:`StoreConfig.s3_endpoint`).
- ``gs://bucket/key``: :class:`pyarrow.fs.GcsFileSystem`, on Google Cloud
  Storage or on an emulator (:attr:`StoreConfig.gcs_endpoint`, reached without
  credentials). A call the store does not answer is retried for
  :attr:`StoreConfig.retry_seconds` (pyarrow's own default is 15 minutes), the
  check before a run for :attr:`StoreConfig.check_seconds`.

**Content identity** (the cache key of a video, the identity of a model or
annotation file in the config hash), one rule for every place a file lives
(:func:`content_hash`): the SHA-256 of the file's bytes, for a regular local
file and for an ``s3://`` / ``gs://`` object alike, so the same bytes have the
same identity wherever they are. An object is hashed as it is read (the
pipeline hashes a video while it stages it for decoding, :meth:`Store.download`:
one download for both). Anything else (a pipe, a device, another URL such as
``http://``, a missing file) has none (None), and is never reused from a cache.

Object stores have no rename, so :meth:`Store.upload` writes the final object in
one go, from a complete local file (see :mod:`tristream.shards.atomic`).
Faults of the store itself (an unknown scheme, a missing bucket, an endpoint
that does not answer) are :class:`StorageError`: one readable line.
"""

from __future__ import annotations

import datetime
import functools
import glob
import hashlib
import os
import re
import shutil
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

import pyarrow.fs as pafs

#: The object-store URI schemes tristream reads and writes.
SCHEMES: tuple[str, ...] = ("s3", "gs")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: Environment variables of an S3-compatible endpoint, the first set wins (the AWS SDKs').
S3_ENDPOINT_ENV: tuple[str, ...] = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
#: Environment variables of the S3 region, the first set wins.
S3_REGION_ENV: tuple[str, ...] = ("AWS_REGION", "AWS_DEFAULT_REGION")
#: Environment variable: a GCS emulator's address (``http://host:port``), as Google's
#: client libraries read it.
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
#: Where credentials come from (:attr:`StoreConfig.credentials`).
CREDENTIALS: tuple[str, ...] = ("default", "anonymous")
_CHUNK = 8 << 20
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


@dataclass(frozen=True)
class StoreConfig:
    """How to reach the object stores: plain values, frozen and picklable, so it travels
    to remote workers with the run's config and a worker reaches the same stores.

    - ``s3_endpoint``: an S3-compatible server (``http://host:9000``: MinIO, Ceph, R2,
      moto); None for AWS itself.
    - ``s3_region``: the S3 region; None for pyarrow's default (``us-east-1`` with a
      custom endpoint, which accepts any).
    - ``gcs_endpoint``: a GCS emulator (``http://host:port``), reached without
      credentials; None for Google Cloud Storage itself.
    - ``credentials``: ``"default"``, pyarrow's default chain, read by the process that
      uses the store (a worker reads its own): for S3 the AWS SDK's chain
      (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``,
      ``AWS_PROFILE`` and ``~/.aws``, web identity, the instance or task role); for GCS
      Google's application default credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
      gcloud's ADC file, the metadata server). ``"anonymous"``: no credentials (public
      buckets). No secret is ever held here.
    - ``retry_seconds``: how long a GCS call is retried while the store does not answer;
      ``check_seconds`` the same for the check before a run (:meth:`Store.check_bucket`).
    - ``retry_attempts``: attempts per S3 call (AWS's standard retry strategy);
      ``connect_timeout``: seconds to open an S3 connection.
    """

    s3_endpoint: str | None = None
    s3_region: str | None = None
    gcs_endpoint: str | None = None
    credentials: str = "default"
    retry_seconds: float = 60.0
    check_seconds: float = 10.0
    retry_attempts: int = 3
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.credentials not in CREDENTIALS:
            raise ValueError(
                f"store credentials must be one of {', '.join(CREDENTIALS)}, "
                f"got {self.credentials!r}"
            )
        for name in ("retry_seconds", "check_seconds", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"store {name} must be > 0, got {getattr(self, name)!r}")
        if not (isinstance(self.retry_attempts, int) and self.retry_attempts >= 1):
            raise ValueError(f"store retry_attempts must be >= 1, got {self.retry_attempts!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StoreConfig:
        """The config the environment gives (``environ``, default :data:`os.environ`, read
        now): the S3 endpoint from ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``; the
        region from ``AWS_REGION``, else ``AWS_DEFAULT_REGION``; a GCS emulator from
        ``STORAGE_EMULATOR_HOST``; credentials from the default chain. The one place
        tristream reads these variables."""
        env = os.environ if environ is None else environ

        def first(names: tuple[str, ...]) -> str | None:
            return next((env[n].strip() for n in names if env.get(n, "").strip()), None)

        return cls(
            s3_endpoint=first(S3_ENDPOINT_ENV),
            s3_region=first(S3_REGION_ENV),
            gcs_endpoint=first((GCS_EMULATOR_ENV,)),
        )


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


def glob_regex(pattern: str) -> re.Pattern:
    """The regular expression of a glob over ``/``-separated keys: ``*`` and ``?`` stay
    within one path component, ``**`` crosses ``/`` (``**/`` also matches no folder, as
    :func:`glob.glob` with ``recursive=True``), ``[...]`` / ``[!...]`` are character sets."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                elif body.startswith("^"):
                    body = "\\" + body
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


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


def _hash_local(path: str) -> str | None:
    """SHA-256 of a regular local file; None for anything else (pipe, device, missing)."""
    try:
        if "://" in path or not stat.S_ISREG(os.stat(path).st_mode):
            return None
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return None
    digest = hashlib.sha256()
    with f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Store:
    """The storage operations on local paths and ``s3://`` / ``gs://`` URIs, for one
    :class:`StoreConfig` (default: :meth:`StoreConfig.from_env`, read now).

    The pyarrow filesystems are made on first use and kept by the store (one per
    scheme and retry limit), so two stores with different configs in one process
    never share an endpoint. A store pickles as its config: unpickled in another
    process, it makes its own filesystems there, for the same stores.
    """

    def __init__(self, config: StoreConfig | None = None):
        self.config = config if config is not None else StoreConfig.from_env()
        self._filesystems: dict[tuple[str, float | None], pafs.FileSystem] = {}
        self._lock = threading.Lock()

    def __reduce__(self):
        return (Store, (self.config,))

    def __repr__(self) -> str:
        return f"Store({self.config!r})"

    # -- filesystems -------------------------------------------------------------------

    def endpoint(self, scheme: str) -> str | None:
        """The endpoint that serves ``scheme`` when it is not the cloud's own."""
        return {"s3": self.config.s3_endpoint, "gs": self.config.gcs_endpoint}.get(scheme)

    def endpoint_of(self, path: str) -> str | None:
        """The endpoint that serves the URI ``path`` when it is not the cloud's own (an
        S3-compatible server, a GCS emulator); None otherwise and for a local path."""
        scheme = uri_scheme(path)
        return None if scheme is None else self.endpoint(scheme)

    def filesystem(self, scheme: str, retry_seconds: float | None = None) -> pafs.FileSystem:
        """The pyarrow filesystem of ``scheme`` (``"s3"`` or ``"gs"``); ``retry_seconds``
        replaces :attr:`StoreConfig.retry_seconds` for GCS."""
        key = (scheme, (retry_seconds or self.config.retry_seconds) if scheme == "gs" else None)
        with self._lock:
            fs = self._filesystems.get(key)
            if fs is None:
                fs = self._filesystems[key] = self._make_filesystem(scheme, key[1])
        return fs

    def _make_filesystem(self, scheme: str, retry_seconds: float | None) -> pafs.FileSystem:
        c = self.config
        anonymous = c.credentials == "anonymous"
        if scheme == "gs":
            retry = datetime.timedelta(seconds=retry_seconds)
            if c.gcs_endpoint is None:
                return pafs.GcsFileSystem(anonymous=anonymous, retry_time_limit=retry)
            url = urlsplit(
                c.gcs_endpoint if "://" in c.gcs_endpoint else f"http://{c.gcs_endpoint}"
            )
            return pafs.GcsFileSystem(
                anonymous=True, scheme=url.scheme, endpoint_override=url.netloc,
                retry_time_limit=retry,
            )  # fmt: skip
        retry = pafs.AwsStandardS3RetryStrategy(max_attempts=c.retry_attempts)
        if c.s3_endpoint is None:
            return pafs.S3FileSystem(
                region=c.s3_region, anonymous=anonymous, connect_timeout=c.connect_timeout,
                retry_strategy=retry,
            )  # fmt: skip
        # An S3-compatible server: any region name is accepted, and its own endpoint is used.
        return pafs.S3FileSystem(
            endpoint_override=c.s3_endpoint, region=c.s3_region or "us-east-1",
            anonymous=anonymous, connect_timeout=c.connect_timeout, retry_strategy=retry,
        )  # fmt: skip

    def resolve(
        self, path: str | os.PathLike, retry_seconds: float | None = None
    ) -> tuple[pafs.FileSystem | None, str]:
        """``(filesystem, path inside it)``: ``(None, path)`` for a local path, else the
        pyarrow filesystem of the URI's scheme and ``bucket/key`` (for pyarrow's readers,
        e.g. ``pq.ParquetFile(inner, filesystem=fs)``)."""
        path = os.fspath(path)
        scheme = uri_scheme(path)
        if scheme is None:
            return None, path
        return self.filesystem(scheme, retry_seconds), path.split("://", 1)[1]

    def error(self, exc: BaseException, path: str) -> StorageError:
        """A one-line :class:`StorageError` for a store fault ``exc`` met at ``path``."""
        text = " ".join(str(exc).split())
        for code, reason in _STORE_ERRORS.items():
            if code in text:
                if reason == "bucket does not exist":
                    reason = f"bucket '{bucket_of(path)}' does not exist"
                elif reason.startswith("cannot connect"):
                    where = self.endpoint_of(path)
                    reason += f" at {where}" if where else ""
                return StorageError(f"{path}: {reason}")
        return StorageError(f"{path}: {text}")

    def _info(self, path: str, retry_seconds: float | None = None) -> pafs.FileInfo:
        fs, inner = self.resolve(path, retry_seconds)
        try:
            return fs.get_file_info(inner)
        except OSError as exc:
            raise self.error(exc, path) from exc

    # -- questions ---------------------------------------------------------------------

    def check_bucket(self, path: str) -> None:
        """For a URI, check that its bucket exists and the store answers (waiting at most
        about :attr:`StoreConfig.check_seconds` on GCS); nothing for a local path.

        Raises :class:`StorageError` (one line) otherwise.
        """
        scheme = uri_scheme(path)
        if scheme is None:
            return
        bucket = bucket_of(path)
        if not bucket:
            raise StorageError(f"{path}: no bucket in the URI (expected {scheme}://bucket/...)")
        info = self._info(f"{scheme}://{bucket}", self.config.check_seconds)
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"{path}: bucket '{bucket}' does not exist")

    def isfile(self, path: str) -> bool:
        """Whether ``path`` is a file (an object)."""
        if not is_uri(path):
            return os.path.isfile(path)
        return self._info(path).type == pafs.FileType.File

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is a folder (on an object store: a prefix that holds objects)."""
        if not is_uri(path):
            return os.path.isdir(path)
        return self._info(path).type == pafs.FileType.Directory

    def exists(self, path: str) -> bool:
        """Whether ``path`` is a file or a folder."""
        if not is_uri(path):
            return os.path.exists(path)
        return self._info(path).type != pafs.FileType.NotFound

    def getsize(self, path: str) -> int:
        """The size of a file in bytes; FileNotFoundError when there is none."""
        if not is_uri(path):
            return os.path.getsize(path)
        info = self._info(path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"no such file: {path}")
        return int(info.size)

    def list_dir(self, folder: str) -> list[str]:
        """The names of the files directly in ``folder``, sorted ([] for a missing folder)."""
        if not is_uri(folder):
            if not os.path.isdir(folder):
                return []
            return sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))
        fs, inner = self.resolve(folder)
        try:
            infos = fs.get_file_info(pafs.FileSelector(inner.rstrip("/"), allow_not_found=True))
        except OSError as exc:
            raise self.error(exc, folder) from exc
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)

    def match(self, pattern: str) -> list[tuple[str, int]]:
        """``(path, size in bytes)`` of every file matching the glob ``pattern``, sorted by
        path (:func:`glob_regex`: ``*``, ``?``, ``[...]`` within a component, ``**`` across
        ``/``). On an object store the objects under the pattern's fixed folder are listed
        (recursively only when the rest of the pattern crosses ``/``); a pattern without
        magic matches the one file it names."""
        if not is_uri(pattern):
            paths = (p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            return sorted((p, os.path.getsize(p)) for p in paths)
        head, inner = pattern.split("://", 1)
        first = next((i for i, c in enumerate(inner) if c in "*?["), None)
        if first is None:
            return [(pattern, self.getsize(pattern))] if self.isfile(pattern) else []
        if "/" not in inner[:first]:
            raise StorageError(f"{pattern}: a glob cannot match bucket names")
        base = inner[:first].rsplit("/", 1)[0]
        rest = inner[len(base) + 1 :]
        regex = glob_regex(inner)
        fs, _ = self.resolve(pattern)
        selector = pafs.FileSelector(base, recursive="/" in rest or "**" in rest,
                                     allow_not_found=True)  # fmt: skip
        try:
            infos = fs.get_file_info(selector)
        except OSError as exc:
            raise self.error(exc, pattern) from exc
        return sorted(
            (f"{head}://{i.path}", int(i.size))
            for i in infos
            if i.type == pafs.FileType.File and regex.match(i.path)
        )

    # -- changes -----------------------------------------------------------------------

    def makedirs(self, folder: str) -> None:
        """Create a local folder (and its parents); nothing for a URI (prefixes need no
        creating)."""
        if not is_uri(folder):
            os.makedirs(folder, exist_ok=True)

    def remove(self, path: str) -> None:
        """Delete one file; a missing one is not an error."""
        if not is_uri(path):
            if os.path.exists(path):
                os.remove(path)
            return
        fs, inner = self.resolve(path)
        try:
            fs.delete_file(inner)
        except FileNotFoundError:
            pass

    def remove_tree(self, folder: str) -> None:
        """Delete a folder and everything under it; errors are ignored (best effort)."""
        if not is_uri(folder):
            shutil.rmtree(folder, ignore_errors=True)
            return
        fs, inner = self.resolve(folder)
        try:
            fs.delete_dir(inner.rstrip("/"))
        except OSError:
            pass

    def upload(self, local: str, path: str) -> None:
        """Copy the complete local file ``local`` to the URI ``path`` as one object.

        The copy runs in pyarrow's C++ code from open to close (a single PUT, or a
        multipart upload completed at the end), so the object appears whole once
        the call returns; a process killed before that leaves no object.
        """
        fs, inner = self.resolve(path)
        try:
            pafs.copy_files(local, inner, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)  # fmt: skip
        except OSError as exc:
            raise self.error(exc, path) from exc

    # -- reading -----------------------------------------------------------------------

    def open_input(self, path: str, seekable: bool = True) -> IO[bytes]:
        """Open a file for binary reading (a context manager with ``read``, and ``seek`` /
        ``tell`` when ``seekable``; a sequential stream reads ahead in 1 MiB blocks)."""
        if not is_uri(path):
            return open(path, "rb")
        fs, inner = self.resolve(path)
        try:
            if seekable:
                return fs.open_input_file(inner)
            return _Stream(fs.open_input_stream(inner, compression=None, buffer_size=1 << 20))
        except FileNotFoundError:
            raise FileNotFoundError(f"no such file: {path}") from None
        except OSError as exc:
            raise self.error(exc, path) from exc

    def read_text(self, path: str) -> str:
        """A whole file as UTF-8 text."""
        with self.open_input(path, seekable=False) as f:
            return f.read().decode("utf-8")

    def content_hash(self, path: str) -> str | None:
        """The content identity of ``path`` (see the module docstring): the SHA-256 (hex)
        of a regular local file's or an object's bytes; None for anything else (another
        URL, a pipe, a device, a missing file or object)."""
        if not is_store_uri(path):
            return _hash_local(os.fspath(path))
        digest = hashlib.sha256()
        try:
            with self.open_input(path, seekable=False) as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        return digest.hexdigest()

    def download(self, path: str, local: str, limit: int | None = None) -> str:
        """Copy the object (or file) ``path`` to the local file ``local`` and return the
        SHA-256 of its bytes, hashed in the same pass (so the content identity of a
        staged video costs no second read: equal to :meth:`content_hash`).

        OSError once more than ``limit`` bytes (when given) have come; FileNotFoundError
        when there is no such object.
        """
        digest = hashlib.sha256()
        copied = 0
        with self.open_input(path, seekable=False) as src, open(local, "wb") as dst:
            while chunk := src.read(_CHUNK):
                copied += len(chunk)
                if limit is not None and copied > limit:
                    raise OSError(f"{path} grew past the staging limit of {limit} bytes")
                digest.update(chunk)
                dst.write(chunk)
        return digest.hexdigest()


@functools.lru_cache(maxsize=16)
def _shared_store(config: StoreConfig) -> Store:
    return Store(config)


def get_store(store: Store | StoreConfig | None = None) -> Store:
    """``store`` itself; for a :class:`StoreConfig`, the one store this process keeps for
    that config (so its connections are reused); for None, the store of
    :meth:`StoreConfig.from_env`, read now (a changed environment gives another store)."""
    if isinstance(store, Store):
        return store
    return _shared_store(store if store is not None else StoreConfig.from_env())


#: What the module-level functions take as ``store``.
StoreLike = Store | StoreConfig | None


def resolve(path: str | os.PathLike, store: StoreLike = None) -> tuple[pafs.FileSystem | None, str]:
    """:meth:`Store.resolve` on ``store`` (:func:`get_store`)."""
    return get_store(store).resolve(path)


def endpoint_of(path: str, store: StoreLike = None) -> str | None:
    """:meth:`Store.endpoint_of` on ``store`` (:func:`get_store`)."""
    return get_store(store).endpoint_of(path)


def store_error(exc: BaseException, path: str, store: StoreLike = None) -> StorageError:
    """:meth:`Store.error` on ``store`` (:func:`get_store`)."""
    return get_store(store).error(exc, path)


def check_bucket(path: str, store: StoreLike = None) -> None:
    """:meth:`Store.check_bucket` on ``store`` (:func:`get_store`)."""
    get_store(store).check_bucket(path)


def isfile(path: str, store: StoreLike = None) -> bool:
    """:meth:`Store.isfile` on ``store`` (:func:`get_store`)."""
    return get_store(store).isfile(path)


def isdir(path: str, store: StoreLike = None) -> bool:
    """:meth:`Store.isdir` on ``store`` (:func:`get_store`)."""
    return get_store(store).isdir(path)


def exists(path: str, store: StoreLike = None) -> bool:
    """:meth:`Store.exists` on ``store`` (:func:`get_store`)."""
    return get_store(store).exists(path)


def getsize(path: str, store: StoreLike = None) -> int:
    """:meth:`Store.getsize` on ``store`` (:func:`get_store`)."""
    return get_store(store).getsize(path)


def list_dir(folder: str, store: StoreLike = None) -> list[str]:
    """:meth:`Store.list_dir` on ``store`` (:func:`get_store`)."""
    return get_store(store).list_dir(folder)


def match(pattern: str, store: StoreLike = None) -> list[tuple[str, int]]:
    """:meth:`Store.match` on ``store`` (:func:`get_store`)."""
    return get_store(store).match(pattern)


def makedirs(folder: str, store: StoreLike = None) -> None:
    """:meth:`Store.makedirs` on ``store`` (:func:`get_store`)."""
    get_store(store).makedirs(folder)


def remove(path: str, store: StoreLike = None) -> None:
    """:meth:`Store.remove` on ``store`` (:func:`get_store`)."""
    get_store(store).remove(path)


def remove_tree(folder: str, store: StoreLike = None) -> None:
    """:meth:`Store.remove_tree` on ``store`` (:func:`get_store`)."""
    get_store(store).remove_tree(folder)


def upload(local: str, path: str, store: StoreLike = None) -> None:
    """:meth:`Store.upload` on ``store`` (:func:`get_store`)."""
    get_store(store).upload(local, path)


def open_input(path: str, seekable: bool = True, store: StoreLike = None) -> IO[bytes]:
    """:meth:`Store.open_input` on ``store`` (:func:`get_store`)."""
    return get_store(store).open_input(path, seekable)


def read_text(path: str, store: StoreLike = None) -> str:
    """:meth:`Store.read_text` on ``store`` (:func:`get_store`)."""
    return get_store(store).read_text(path)


def content_hash(path: str, store: StoreLike = None) -> str | None:
    """The content identity of ``path``: :meth:`Store.content_hash` on ``store``
    (:func:`get_store`; a local path needs no store)."""
    if not is_store_uri(path):
        return _hash_local(os.fspath(path))
    return get_store(store).content_hash(path)
