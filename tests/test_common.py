"""CPU thread sharing for torch (tristream.models.common)."""

from __future__ import annotations

import os

import torch

from tristream.models.common import share_cpu_threads, usable_cpus


def test_share_cpu_threads_caps_torch_threads_and_never_raises_them():
    before = torch.get_num_threads()
    try:
        cpus = usable_cpus()
        assert 1 <= cpus <= (os.cpu_count() or cpus)
        torch.set_num_threads(cpus)
        assert share_cpu_threads(1) == cpus  # one calling thread: all CPUs
        assert share_cpu_threads(cpus) == 1  # one calling thread per CPU: one each
        assert torch.get_num_threads() == 1
        assert share_cpu_threads(1) == 1  # never raised again
        assert share_cpu_threads(0) == 1
    finally:
        torch.set_num_threads(before)
