"""The TV-L1 kernel paths by name, and what ``auto`` picks per device: the one registry,
importable without torch (the run configuration validates ``--flow-kernel`` against it).
The path classes live in :mod:`.paths` and :mod:`.triton_kernels`."""

from __future__ import annotations

__all__ = ["AUTO_KERNELS", "KERNELS", "KERNEL_CHOICES", "PATHS"]

#: Kernel path name -> "module:class" of its implementation.
PATHS: dict[str, str] = {
    "eager": "tristream.models.tvl1.paths:EagerPath",
    "compiled": "tristream.models.tvl1.paths:CompiledPath",
    "triton": "tristream.models.tvl1.triton_kernels:TritonPath",
    "fused": "tristream.models.tvl1.paths:FusedCpuPath",
}

#: The kernel paths, by name.
KERNELS: tuple[str, ...] = tuple(PATHS)

#: Accepted ``kernel`` arguments: a path of :data:`KERNELS`, or ``auto``.
KERNEL_CHOICES: tuple[str, ...] = ("auto", *KERNELS)

#: What ``auto`` tries, in order, per device type (the first that can run is used; eager
#: always can): the fastest exact path of each device.
AUTO_KERNELS: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "eager"),
    "cpu": ("fused", "eager"),
}
