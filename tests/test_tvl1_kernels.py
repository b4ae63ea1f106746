"""TV-L1 kernel paths: the registry, honest fallbacks, torch.compile, and the Triton kernels.

The Triton kernels run on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``),
against the eager path on small real frames. Triton reads the variable when it is first
imported (its own library functions are decorated then), so the interpreted checks run in
a child process started with the variable set (the ``interpreter`` fixture); this process,
and every other test of the session, sees Triton as a user's CPU does: unable to run. The
interpreter pays ~1 ms per operation, so solves use few iterations. Triton is a test
dependency (the ``dev`` extra): a missing Triton is an error here, not a skip.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tristream.models.tvl1 import (
    KERNEL_CHOICES,
    KERNELS,
    TVL1,
    TVL1Params,
    TVL1Stats,
    ops,
    resolve_kernel,
    tvl1_flow,
)
from tristream.models.tvl1 import triton_kernels as tt

REPO = Path(__file__).resolve().parents[1]


def load_pair(videos_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Two consecutive real frames of bikes.mp4, gray, 32x40 (area resize), float [1, H, W]."""
    cap = cv2.VideoCapture(str(videos_dir / "bikes.mp4"))
    frames = []
    for _ in range(42):
        ok, frame = cap.read()
        assert ok, "could not decode bikes.mp4"
        frames.append(frame)
    cap.release()
    gray = [
        cv2.cvtColor(cv2.resize(f, (40, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        for f in frames[40:42]
    ]
    return tuple(torch.from_numpy(g).to(torch.float32)[None] for g in gray)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def pair(videos_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    return load_pair(videos_dir)


#: The checks that need Triton's interpreter, by name: run by :func:`run_interpreter_checks`
#: in the child process, each reported by the parent test of the same name.
INTERPRETER_CHECKS: dict = {}


def interpreter_check(fn):
    INTERPRETER_CHECKS[fn.__name__] = fn
    return fn


def run_interpreter_checks(videos_dir: str, out: str) -> None:
    """The child process: every interpreter check on the real pair; ``out`` gets JSON
    ``{name: "ok" or the traceback}``."""
    pair = load_pair(Path(videos_dir))
    results = {}
    for name, check in INTERPRETER_CHECKS.items():
        try:
            check(pair)
            results[name] = "ok"
        except BaseException:  # noqa: BLE001 - reported to the parent
            results[name] = traceback.format_exc()
    Path(out).write_text(json.dumps(results))


class InterpreterRun:
    """The child process, started at once so that it overlaps this module's other tests."""

    def __init__(self, videos_dir: Path, out: Path):
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        code = (
            "import sys; from tests.test_tvl1_kernels import run_interpreter_checks as r; "
            "r(*sys.argv[1:])"
        )
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(videos_dir), str(out)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.results: dict[str, str] | None = None

    def result(self, name: str) -> str:
        if self.results is None:
            log, _ = self.proc.communicate(timeout=300)
            assert self.proc.returncode == 0 and self.out.exists(), log[-3000:]
            self.results = json.loads(self.out.read_text())
        return self.results[name]

    def close(self) -> None:
        if self.proc.poll() is None:  # a test run stopped early
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(scope="module", autouse=True)
def interpreter(videos_dir: Path, tmp_path_factory):
    run = InterpreterRun(videos_dir, tmp_path_factory.mktemp("triton_interpreter") / "out.json")
    yield run
    run.close()


def _check_in_child(interpreter: InterpreterRun, name: str) -> None:
    result = interpreter.result(name)
    assert result == "ok", f"{name}, under TRITON_INTERPRET=1 in a child process:\n{result}"


def _warping_inputs(i0: torch.Tensor, i1: torch.Tensor, flow: torch.Tensor | None = None):
    """The constants of one warping and a state after some eager iterations (real frames)."""
    b, h, w = i0.shape
    u = [torch.zeros_like(i0), torch.zeros_like(i0)] if flow is None else list(flow)
    i1x, i1y = ops.centered_gradient(i1)
    warped = ops.warp_bicubic(torch.stack([i1, i1x, i1y], 1), u[0], u[1])
    i1w, i1wx, i1wy = warped.unbind(1)
    grad = i1wx * i1wx + i1wy * i1wy
    nig = torch.where(grad > ops.FLT_EPSILON, -1.0 / grad, -1e30)
    rho_c = i1w - i1wx * u[0] - i1wy * u[1] - i0
    consts = [i1wx.contiguous(), i1wy.contiguous(), nig, rho_c]
    state = u + [torch.zeros_like(i0) for _ in range(4)]
    for _ in range(5):  # non-zero duals and flow, as mid-solve
        *state, _ = ops.iteration(*state, *consts, 0.045, 0.3, 0.25 / 0.3)
    return list(state), consts


# ------------------------------------------------------------------------------------------
# registry and fallbacks


def test_kernel_paths_are_registered_once_and_resolved_by_name() -> None:
    assert KERNELS == ("eager", "compiled", "triton", "fused")
    assert KERNEL_CHOICES == ("auto", *KERNELS)
    assert resolve_kernel("auto", "cpu") == ("fused", None)  # the fastest exact CPU path
    assert resolve_kernel("auto", "cpu", TVL1Params(gamma=0.5)) == ("eager", None)
    name, reason = resolve_kernel("fused", "cpu", TVL1Params(gamma=0.5))
    assert name == "eager" and "gamma" in reason
    name, reason = resolve_kernel("fused", "cuda")
    assert name == "eager" and "CPU" in reason
    assert resolve_kernel("auto", "cuda:0") == ("triton", None)  # Triton is installed here
    assert resolve_kernel("eager", "cpu") == ("eager", None)
    if "TRITON_INTERPRET" not in os.environ:  # a user's CPU: the triton path cannot run
        name, reason = resolve_kernel("triton", "cpu")
        assert name == "eager" and "TRITON_INTERPRET" in reason
    for bad in ("fast", "Triton", ""):
        with pytest.raises(ValueError, match="unknown TV-L1 kernel"):
            resolve_kernel(bad, "cpu")
    x = torch.zeros(1, 20, 20)
    with pytest.raises(ValueError, match="unknown TV-L1 kernel"):
        tvl1_flow(x, x, kernel="fast")
    with pytest.raises(ValueError, match="unknown TV-L1 kernel"):
        TVL1(kernel="fast")


def test_missing_triton_is_logged_and_reported(pair, monkeypatch, caplog) -> None:
    """kernel="triton" without Triton: eager runs, a warning says so, stats report it."""
    monkeypatch.setattr(tt, "triton", None)
    i0, i1 = pair
    params = TVL1Params(nscales=2, warps=2, outer_iterations=3)
    stats = TVL1Stats()
    with caplog.at_level(logging.WARNING, logger="tristream.models.tvl1"):
        got = tvl1_flow(i0, i1, params, kernel="triton", stats=stats)
    assert stats.kernel_requested == "triton" and stats.kernel == "eager"
    assert "Triton is not installed" in stats.fallback_reason
    assert "'triton' cannot run" in caplog.text and "Triton is not installed" in caplog.text
    assert torch.equal(got, tvl1_flow(i0, i1, params, kernel="eager"))
    # On CUDA, "auto" then takes the eager path: a choice, not a fallback.
    assert resolve_kernel("auto", "cuda") == ("eager", None)


def test_failed_compilation_is_logged_and_reported(pair, monkeypatch, caplog) -> None:
    """kernel="compiled" with a compiler that fails: the batch is solved eagerly, a warning
    is logged, stats (and the module, via TVL1.last_stats) report it, later calls too."""

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no working C++ compiler (injected)")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    i0, i1 = pair
    params = TVL1Params(nscales=2, warps=2, outer_iterations=3)
    module = TVL1(params, kernel="compiled")
    with caplog.at_level(logging.WARNING, logger="tristream.models.tvl1"):
        got = module(i0, i1)
    stats = module.last_stats
    assert stats is not None and stats.kernel == "eager"
    assert "torch.compile failed" in stats.fallback_reason
    assert "injected" in stats.fallback_reason and "injected" in caplog.text
    assert torch.equal(got, tvl1_flow(i0, i1, params, kernel="eager"))
    again = TVL1Stats()
    tvl1_flow(i0, i1, params, kernel="compiled", stats=again)
    assert again.kernel == "eager" and again.fallback_reason == stats.fallback_reason


def test_tvl1_flow_backend_takes_the_kernel_and_reports_what_ran(pair, monkeypatch) -> None:
    """``compute_flow(..., backend="tvl1", kernel=..., stats=...)``: the pipeline's way in."""
    from tristream.transforms.flow import compute_flow

    monkeypatch.setattr(tt, "triton", None)
    i0, i1 = pair
    gray = torch.cat([i0, i1]).to(torch.uint8).numpy()
    small = dict(nscales=2, warps=2, outer_iterations=3)
    stats = TVL1Stats()
    got = compute_flow(gray, backend="tvl1", device="cpu", kernel="triton", stats=stats, **small)
    assert stats.kernel_requested == "triton" and stats.kernel == "eager"
    assert "Triton is not installed" in stats.fallback_reason and stats.pairs == 1
    want = tvl1_flow(i0, i1, TVL1Params(**small), kernel="eager")[0].numpy()
    assert np.array_equal(got[0], want)
    with pytest.raises(ValueError, match="unknown TV-L1 kernel"):
        compute_flow(gray, backend="tvl1", device="cpu", kernel="fast", **small)


@pytest.mark.slow
def test_compiled_path_really_compiles_and_agrees_with_eager(pair) -> None:
    """``kernel="compiled"`` runs torch.compile'd graphs (no fallback, graphs counted by
    dynamo) and gives the eager flow to float32 rounding."""
    from torch._dynamo.utils import counters

    i0, i1 = pair
    params = TVL1Params(nscales=2, warps=2)
    eager = tvl1_flow(i0, i1, params, kernel="eager")
    before = counters["stats"]["unique_graphs"]
    stats = TVL1Stats()
    compiled = tvl1_flow(i0, i1, params, kernel="compiled", stats=stats)
    assert stats.kernel == "compiled" and stats.fallback_reason is None
    assert counters["stats"]["unique_graphs"] > before
    torch.testing.assert_close(compiled, eager, atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------------
# Triton kernels (interpreted on the CPU, in the child process) against the eager path


def test_the_interpreter_stays_in_the_child_process() -> None:
    """Nothing of the interpreter leaks into this process (and the rest of the session)."""
    if "TRITON_INTERPRET" not in os.environ:
        assert not tt.INTERPRETED
        assert tt.unavailable(torch.device("cpu"), TVL1Params()) is not None


@interpreter_check
def triton_runs_interpreted_and_resolves(pair) -> None:
    assert tt.triton is not None, "Triton is a test dependency (the dev extra)"
    assert tt.INTERPRETED, "the CPU checks need TRITON_INTERPRET=1 before Triton is imported"
    assert resolve_kernel("triton", "cpu") == ("triton", None)  # interpreted
    name, reason = resolve_kernel("triton", "cpu", TVL1Params(gamma=0.5))
    assert name == "eager" and "gamma" in reason
    name, reason = resolve_kernel("triton", "cpu", TVL1Params(median_filtering=7))
    assert name == "eager" and "median_filtering=7" in reason


def test_triton_runs_interpreted_and_resolves(interpreter) -> None:
    _check_in_child(interpreter, "triton_runs_interpreted_and_resolves")


@interpreter_check
def triton_median_is_exact(pair) -> None:
    """3x3 and 5x5 medians equal the eager network and OpenCV's medianBlur, ties included."""
    i0, _ = pair
    ties = torch.from_numpy(np.random.default_rng(0).integers(0, 3, (1, 32, 40))).float()
    u = torch.cat([i0 / 7.0, ties])
    for k in tt.MEDIAN_SIZES:
        got = tt.median(u, k)
        assert torch.equal(got, ops.median_filter(u, k))
        for b in range(2):
            assert np.array_equal(got[b].numpy(), cv2.medianBlur(u[b].numpy(), k))


def test_triton_median_is_exact(interpreter) -> None:
    _check_in_child(interpreter, "triton_median_is_exact")


def test_triton_median_networks_are_the_generated_ones() -> None:
    """The kernels' generated blocks are what ``median_network_source`` makes today."""
    text = Path(tt.__file__).read_text()
    for k in tt.MEDIAN_SIZES:
        block = text.split(f"# BEGIN GENERATED median {k}\n")[1].split("        # END")[0]
        assert [line.strip() for line in block.splitlines()] == tt.median_network_source(k)


@interpreter_check
def triton_iteration_matches_eager_and_freezes_finished_pairs(pair) -> None:
    """One fused iteration = the eager iteration to 1 ulp; a pair not live is copied through
    unchanged; the new live mask is the eager one."""
    i0, i1 = pair
    i0 = torch.cat([i0, i1.flip(2)])  # two different pairs
    i1 = torch.cat([i1, i0[:1].flip(2)])
    state, consts = _warping_inputs(i0, i1)
    coefs = (0.045, 0.3, 0.25 / 0.3)
    *ref, err = ops.iteration(*state, *consts, *coefs)
    eps = (err[0] + err[1]) / 2  # pair 0 or 1 is above it, the other below
    live = torch.tensor([True, True])
    got, got_live = tt.iteration(state, consts, live, eps, *coefs)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=2e-6, rtol=1e-6)
    assert torch.equal(got_live, err > eps) and got_live.sum() == 1
    got, got_live = tt.iteration(state, consts, torch.tensor([True, False]), eps, *coefs)
    for g, r, s in zip(got, ref, state):
        torch.testing.assert_close(g[0], r[0], atol=2e-6, rtol=1e-6)
        assert torch.equal(g[1], s[1])  # finished: exactly unchanged
    assert not got_live[1]


def test_triton_iteration_matches_eager_and_freezes_finished_pairs(interpreter) -> None:
    _check_in_child(interpreter, "triton_iteration_matches_eager_and_freezes_finished_pairs")


@interpreter_check
def triton_solve_agrees_with_eager_and_opencv(pair) -> None:
    """A whole (short) solve on the triton path: the eager flow to float32 rounding, OpenCV's
    to its own agreement, one host read per outer run."""
    i0, i1 = pair
    params = TVL1Params(nscales=1, warps=2, outer_iterations=2, inner_iterations=4)
    stats = TVL1Stats()
    got = tvl1_flow(i0, i1, params, kernel="triton", sync_every=4, stats=stats)
    assert stats.kernel == "triton" and stats.fallback_reason is None
    assert 0 < stats.host_syncs <= stats.outer_runs <= 4
    eager = tvl1_flow(i0, i1, params, kernel="eager")
    torch.testing.assert_close(got, eager, atol=1e-4, rtol=0)
    tv = cv2.optflow.DualTVL1OpticalFlow_create()
    tv.setScalesNumber(1)
    tv.setWarpingsNumber(2)
    tv.setOuterIterations(2)
    tv.setInnerIterations(4)
    ref = tv.calc(i0[0].numpy().astype(np.uint8), i1[0].numpy().astype(np.uint8), None)
    assert np.abs(ref).max() > 0.05  # there is flow to agree on
    assert np.linalg.norm(got[0].numpy() - ref, axis=-1).mean() < 1e-3


def test_triton_solve_agrees_with_eager_and_opencv(interpreter) -> None:
    _check_in_child(interpreter, "triton_solve_agrees_with_eager_and_opencv")
