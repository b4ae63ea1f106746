"""The Triton kernels compile for real GPUs without one: ahead of time, no register spills.

Each kernel of ``tristream.models.tvl1.triton_kernels`` is compiled for sm_80 (A100),
sm_90 (H100/H200) and sm_100 (B200) with Triton's own ptxas, and its cubin's resources are
read with Triton's ``cuobjdump``: a compile error fails the test, and so does any stack or
local memory (spilled registers). It runs in a fresh process, since the CPU tests import
Triton in interpreter mode (``TRITON_INTERPRET=1``), which has no compiler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_every_triton_kernel_compiles_for_every_gpu_generation_without_spills() -> None:
    # The compile runs in a fresh process without TRITON_INTERPRET (whatever the caller's
    # environment holds), as ahead-of-time compiles need Triton's compiler.
    from tristream.models.tvl1 import triton_kernels

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "tristream.models.tvl1.triton_kernels", "--aot"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    usage = json.loads(done.stdout)
    kernels = {"iteration", "median3", "median5"}
    expected = {f"{k}@sm_{a}" for k in kernels for a in triton_kernels.AOT_ARCHS}
    assert set(usage) == expected
    for name, res in usage.items():
        assert 0 < res["REG"] <= 255, (name, res)
        assert res["STACK"] == 0 and res["LOCAL"] == 0, f"{name} spills registers: {res}"
