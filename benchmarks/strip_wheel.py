"""Strips the debug sections from a wheel's shared libraries, in place, so that the
anchor's wheels (mamba_ssm, causal_conv1d) built ahead on a CPU machine are small enough
to travel to the GPU machine beside the working tree.

    python benchmarks/strip_wheel.py WHEEL [WHEEL ...]

Each ``.so`` inside goes through ``strip --strip-debug`` (code and symbols stay: the
library loads and links as before); the wheel's RECORD gets the new sizes and sha256
hashes, so pip installs it as it would the original. At the sm_90 build of 2026-12-05:
causal_conv1d 25.4 -> 22.3 MB, mamba_ssm 39.5 -> 37.2 MB.
"""
from __future__ import annotations

import base64
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile


def record_line(path: str, data: bytes) -> str:
    """A RECORD row: path, urlsafe-base64 sha256 without padding, size."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def strip_wheel(wheel: pathlib.Path, strip: str = "strip") -> tuple[int, int]:
    """Strips the wheel's shared libraries in place; returns (bytes before, bytes after)."""
    before = wheel.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]  # files, not folder entries
            archive.extractall(root)
        records = [n for n in names if n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise SystemExit(f"strip_wheel: {wheel} has {len(records)} RECORD files, expected one")
        for name in names:
            if name.endswith(".so"):
                subprocess.run([strip, "--strip-debug", str(root / name)], check=True)
        rows = [record_line(n, (root / n).read_bytes()) for n in names if n != records[0]]
        (root / records[0]).write_text("\n".join(rows + [f"{records[0]},,"]) + "\n")
        rebuilt = root.parent / (wheel.name + ".new")
        with zipfile.ZipFile(rebuilt, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for name in names:  # the original order: dist-info last, as wheel tools write it
                archive.write(root / name, name)
        shutil.move(rebuilt, wheel)
    return before, wheel.stat().st_size


def main(argv: list[str] | None = None) -> int:
    wheels = [pathlib.Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not wheels:
        raise SystemExit("usage: python benchmarks/strip_wheel.py WHEEL [WHEEL ...]")
    for wheel in wheels:
        before, after = strip_wheel(wheel)
        print(f"{wheel.name}: {before / 1e6:.1f} -> {after / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
