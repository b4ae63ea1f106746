"""Moved: the run configuration lives in :mod:`tristream.config` (no Beam)."""

from tristream.config import RunConfig  # noqa: F401
