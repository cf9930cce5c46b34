"""benchmarks/strip_wheel.py: a wheel's shared libraries lose their debug sections, keep
working, and the RECORD matches the new files (what pip checks against)."""
from __future__ import annotations

import ctypes
import importlib.util
import pathlib
import shutil
import subprocess
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("strip_wheel", ROOT / "benchmarks" / "strip_wheel.py")
strip_wheel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(strip_wheel)

SOURCE = "int twice(int x) { static int calls; calls++; return 2 * x; }\n"


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("strip") is None, reason="needs gcc and strip")
def test_strips_debug_sections_and_rewrites_the_record(tmp_path):
    (tmp_path / "twice.c").write_text(SOURCE)
    lib = tmp_path / "twice.so"
    subprocess.run(["gcc", "-g3", "-O0", "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "twice.c")], check=True)
    wheel = tmp_path / "demo-1.0-cp312-cp312-linux_x86_64.whl"
    files = {"demo/__init__.py": b"", "demo/twice.so": lib.read_bytes(), "demo-1.0.dist-info/METADATA": b"Name: demo\n"}
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("demo-1.0.dist-info/RECORD", "stale\n")
        archive.writestr("demo/", "")  # a folder entry, as some zip tools add: not a file of the RECORD

    before, after = strip_wheel.strip_wheel(wheel)
    assert after < before

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record = archive.read("demo-1.0.dist-info/RECORD").decode().splitlines()
        contents = {n: archive.read(n) for n in names}
    assert names == [*files, "demo-1.0.dist-info/RECORD"]
    assert record == [strip_wheel.record_line(n, contents[n]) for n in files] + ["demo-1.0.dist-info/RECORD,,"]
    assert len(contents["demo/twice.so"]) < len(files["demo/twice.so"])
    stripped = tmp_path / "stripped.so"
    stripped.write_bytes(contents["demo/twice.so"])
    assert ctypes.CDLL(str(stripped)).twice(21) == 42  # still loads and runs


def test_refuses_a_wheel_without_one_record(tmp_path):
    wheel = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("bad/__init__.py", "")
    with pytest.raises(SystemExit, match="0 RECORD files"):
        strip_wheel.strip_wheel(wheel)
