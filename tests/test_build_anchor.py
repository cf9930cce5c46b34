"""benchmarks/build_anchor.sh's kept wheels: cut into parts for a machine that returns
files only up to a size, and joined back by a later run (no build runs: the wheels are
found in WHEEL_DIR)."""
from __future__ import annotations

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "build_anchor.sh"
MAMBA = "mamba_ssm-2.3.2.post1-cp312-cp312-linux_x86_64.whl"
CONV = "causal_conv1d-1.7.0-cp312-cp312-linux_x86_64.whl"


def build_only(tmp: pathlib.Path, wheels: pathlib.Path, **env: str) -> subprocess.CompletedProcess:
    sdist = tmp / "sdist"
    sdist.mkdir(exist_ok=True)
    return subprocess.run(["bash", str(SCRIPT), str(sdist), "90", str(wheels)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "ANCHOR_BUILD_ONLY": "1", **env})


def test_wheels_over_the_part_size_are_kept_in_parts_and_joined_back(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    big, small = os.urandom(40_000), os.urandom(10_000)
    (wheels / MAMBA).write_bytes(big)
    (wheels / CONV).write_bytes(small)

    done = build_only(tmp_path, wheels, ANCHOR_PART_SIZE="16K")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wheel found, not rebuilt") == 2
    assert sorted(p.name for p in wheels.iterdir()) == [CONV] + [f"{MAMBA}.part{i:02d}" for i in range(3)]
    assert all((wheels / f"{MAMBA}.part{i:02d}").stat().st_size <= 16 * 1024 for i in range(3))

    # A later run (the parts carried back as WHEEL_DIR) joins them and builds nothing.
    done = build_only(tmp_path, wheels)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wheel found, not rebuilt") == 2
    assert (wheels / MAMBA).read_bytes() == big and (wheels / CONV).read_bytes() == small


def test_build_only_needs_a_wheel_folder(tmp_path):
    (tmp_path / "sdist").mkdir()
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "sdist")], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "ANCHOR_BUILD_ONLY": "1"})
    assert done.returncode == 2 and "ANCHOR_BUILD_ONLY needs WHEEL_DIR" in done.stderr
