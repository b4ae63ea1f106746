"""Flow backends named by import path reach every worker; registrations stay local.

A remote worker (Dask, Dataflow) imports tristream fresh and gets only the pickled
configuration, so a backend must be found from its name alone: ``--flow
package.module:function``. The worker case is a fresh ``python -c`` process that never
called ``register_backend``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import flow_backend_example
from tristream.transforms.flow import (
    BACKENDS,
    compute_flow,
    is_backend,
    register_backend,
    resolve_backend,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = "tests.flow_backend_example:farneback"


def _bikes_gray(videos_dir: Path, n: int = 4) -> np.ndarray:
    """``n`` consecutive real frames of bikes.mp4, gray uint8 [n, 136, 320]."""
    cap = cv2.VideoCapture(str(videos_dir / "bikes.mp4"))
    frames = []
    for _ in range(40 + n):
        ok, frame = cap.read()
        assert ok, "could not decode bikes.mp4"
        frames.append(frame)
    cap.release()
    return np.stack(
        [
            cv2.cvtColor(
                cv2.resize(f, (320, 136), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY
            )
            for f in frames[40:]
        ]
    )


def test_example_backend_measures_a_known_shift(videos_dir: Path) -> None:
    """The example is a real flow: a real frame moved by (2, 1) px gives flow (2, 1)."""
    img = _bikes_gray(videos_dir, 1)[0]
    h, w, (dx, dy) = 96, 160, (2, 1)
    i0 = img[20 : 20 + h, 80 : 80 + w]
    i1 = img[20 - dy : 20 - dy + h, 80 - dx : 80 - dx + w]  # i0[y, x] == i1[y + dy, x + dx]
    flow = compute_flow(np.stack([i0, i1]), backend=EXAMPLE)
    assert flow.shape == (1, h, w, 2) and flow.dtype == np.float32
    inner = flow[0, 16:-16, 16:-16].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), (dx, dy), atol=0.1)


def test_import_path_backend_is_resolved_by_a_fresh_worker(videos_dir: Path, tmp_path) -> None:
    """A process that never registered anything resolves ``--flow module:function`` itself
    and computes the flow of calling the function directly; a name registered here does not
    reach it."""
    gray = _bikes_gray(videos_dir)
    direct = flow_backend_example.farneback(gray)
    assert np.abs(direct).max() > 0.5  # real motion to compare
    np.save(tmp_path / "gray.npy", gray)
    BACKENDS.pop("test-local", None)
    register_backend("test-local", flow_backend_example.farneback)
    try:
        assert is_backend("test-local")  # here, in this process
        child = textwrap.dedent(
            f"""
            import json, sys
            import numpy as np
            from tristream.transforms import flow
            before = sorted(flow.BACKENDS)
            assert "tests.flow_backend_example" not in sys.modules
            gray = np.load({str(tmp_path / "gray.npy")!r})
            out = flow.compute_flow(gray, backend={EXAMPLE!r})
            np.save({str(tmp_path / "child.npy")!r}, out)
            print(json.dumps({{
                "backends": before,
                "is_backend": flow.is_backend({EXAMPLE!r}),
                "local_known": flow.is_backend("test-local"),
                "imported": "tests.flow_backend_example" in sys.modules,
            }}))
            """
        )
        run = subprocess.run(
            [sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=120
        )
    finally:
        BACKENDS.pop("test-local", None)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["backends"] == ["opencv", "tvl1"]  # nothing registered in the worker
    assert report["is_backend"] and report["imported"]
    assert not report["local_known"]  # register_backend is local to its process
    got = np.load(tmp_path / "child.npy")
    assert got.dtype == np.float32 and got.shape == (len(gray) - 1, *gray.shape[1:], 2)
    assert np.array_equal(got, direct)
    assert np.array_equal(compute_flow(gray, backend=EXAMPLE), direct)  # and here


def test_names_resolve_to_their_functions() -> None:
    assert resolve_backend("tvl1") is BACKENDS["tvl1"]
    assert resolve_backend("opencv") is BACKENDS["opencv"]
    assert resolve_backend(EXAMPLE) is flow_backend_example.farneback
    # a dotted attribute after the colon
    assert resolve_backend("tristream.transforms.flow:BACKENDS.get") == BACKENDS.get
    for name in ("tvl1", "opencv", EXAMPLE):
        assert is_backend(name)
    assert not is_backend("none")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tests.flow_backend_example.farneback", "unknown flow backend .*import path"),
        ("farneback", "unknown flow backend 'farneback'"),
        ("tests.flow_backend_example:", "not an import path"),
        (":farneback", "not an import path"),
        ("tests.flow_backend_example:farneback:x", "not an import path"),
        ("tests.no_such_module:farneback", "cannot import module 'tests.no_such_module'.*"
         "ModuleNotFoundError"),
        ("tests.flow_backend_example:nope", "'tests.flow_backend_example' has no attribute 'nope'"),
        ("tests.flow_backend_example:FARNEBACK.nope", "FARNEBACK' has no attribute 'nope'"),
        ("tests.flow_backend_example:FARNEBACK", "'FARNEBACK' is a dict, not a callable"),
    ],
)  # fmt: skip
def test_bad_backend_names_give_clear_errors(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"--flow.*{message}"):
        resolve_backend(name)
    assert not is_backend(name)
    with pytest.raises(ValueError, match=message):
        compute_flow(np.zeros((2, 8, 8), np.uint8), backend=name)


def test_checking_a_backend_imports_its_module_but_never_calls_it(tmp_path, monkeypatch) -> None:
    """Validation imports the module and checks the attribute; the function does not run. A
    module that fails as it imports is named with its error."""
    (tmp_path / "tristream_test_never_called.py").write_text(
        "def flow(gray, **params):\n    raise AssertionError('the backend was called')\n"
    )
    (tmp_path / "tristream_test_broken.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in ("tristream_test_never_called", "tristream_test_broken"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    assert is_backend("tristream_test_never_called:flow")
    fn = resolve_backend("tristream_test_never_called:flow")
    assert fn.__module__ == "tristream_test_never_called"
    with pytest.raises(AssertionError, match="the backend was called"):  # only when computing
        compute_flow(np.zeros((2, 8, 8), np.uint8), backend="tristream_test_never_called:flow")
    with pytest.raises(ValueError, match="cannot import module .*RuntimeError: broken on import"):
        resolve_backend("tristream_test_broken:flow")


def test_register_backend_is_checked_and_local() -> None:
    for bad in ("", "none", "pkg.mod:fn"):
        with pytest.raises(ValueError, match="invalid flow backend name"):
            register_backend(bad, flow_backend_example.farneback)
    with pytest.raises(ValueError, match="must be callable"):
        register_backend("test-not-callable", 3)  # type: ignore[arg-type]
    assert "test-not-callable" not in BACKENDS


def test_tvl1_backend_called_without_a_feeder_leaves_nothing_running(videos_dir: Path) -> None:
    """``compute_flow(backend="tvl1")`` without the worker's feeder makes a solver and a
    feeder for the call and closes them: no feeder thread outlives the call."""
    import threading

    def feeders() -> int:
        return sum(t.name == "tristream-flow-feeder" for t in threading.enumerate())

    gray = _bikes_gray(videos_dir, 2)[:, :48, :64]
    before = feeders()
    for _ in range(2):
        flow = compute_flow(gray, backend="tvl1", device="cpu", nscales=1, warps=1)
        assert flow.shape == (1, 48, 64, 2)
    assert feeders() == before


def test_a_run_with_an_import_path_backend_stores_its_flow(tmp_path, carphone):
    """``tristream run --flow package.module:function``: the run checks the path before any
    work (a bad one is exit 2, nothing written) and the rows hold that function's flow."""
    from tristream.cli import main
    from tristream.shards import read_rows
    from tristream.transforms.decode import decode_video

    bad = tmp_path / "bad"
    argv = ["run", "--input", carphone, "--short-side", "64", "--fps", "5", "--max-frames", "8"]
    assert main([*argv, "--output", str(bad), "--flow", "tests.flow_backend_example:nope"]) == 2
    assert not (bad / "manifest.json").exists()
    out = tmp_path / "o"
    assert main([*argv, "--output", str(out), "--flow", EXAMPLE, "--flow-encoding", "f16"]) == 0
    rows = list(read_rows(str(next((out / "shards").glob("*.parquet")))))
    frames = decode_video(carphone, fps=5, short_side=64)[:8]
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    expected = flow_backend_example.farneback(gray).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(rows[0]["flow"], expected)
