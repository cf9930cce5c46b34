"""benchmarks/trim_gencode.py keeps one architecture's -gencode pair and valid Python."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("trim_gencode", ROOT / "benchmarks" / "trim_gencode.py")
trim = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trim)

# The shape of the anchors' setup.py: pairs appended inside version checks.
SETUP = '''
flags = []
if True:
    flags.append("-O3")
    cc_flag.append("-gencode")
    cc_flag.append("arch=compute_75,code=sm_75")
    if version >= 11:
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_90,code=sm_90")
    if version >= 12:
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_100,code=sm_100")
'''


def test_keeps_only_the_chosen_pair_and_compiles(tmp_path, capsys):
    path = tmp_path / "setup.py"
    path.write_text(SETUP)
    assert trim.main(["90", str(path)]) == 0
    text = path.read_text()
    assert 'arch=compute_90,code=sm_90' in text and "sm_75" not in text and "sm_100" not in text
    assert text.count('cc_flag.append("-gencode")') == 1
    compile(text, str(path), "exec")  # the emptied if-block holds a pass
    assert "building for sm_90 only" in capsys.readouterr().out


def test_an_architecture_the_file_does_not_build_is_refused():
    with pytest.raises(ValueError, match=r"expected exactly sm_80 to remain, found \[\]"):
        trim.keep_arch(SETUP, "80")
