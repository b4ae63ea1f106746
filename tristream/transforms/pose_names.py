"""The heatmap decoders by name (``--pose-decoder``): their one registry, importable without
torch (the run configuration validates against it; :mod:`.pose` implements them)."""

from __future__ import annotations

#: ``argmax`` (quarter-pixel shift toward the higher neighbour), ``soft-argmax``,
#: ``dark`` (DARK's Taylor refinement); see :func:`tristream.transforms.pose.decode_heatmaps`.
DECODERS: tuple[str, ...] = ("argmax", "soft-argmax", "dark")
