"""The built wheel carries the twistd plugin (and the status page's script
and stylesheet), and twistd lists it."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_the_twistd_plugin(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("karpor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/karpor_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert "karpor/app/service.py" in names
    assert "karpor/status/static/status.js" in names
    assert "karpor/status/static/status.css" in names


def test_twistd_lists_karpor(tmp_path):
    # Run from an empty directory so that only the installed package can be found.
    out = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert any(line.split()[:1] == ["karpor"] for line in out.splitlines())
