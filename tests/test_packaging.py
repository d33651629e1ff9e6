"""The built wheel installs one import package of ours, ``lstmscope``, and works outside the checkout.

The repository's folders are ``interpret/`` and ``server/``; pyproject.toml maps them to
``lstmscope`` and ``lstmscope.server``. Installing ``interpret`` or ``server`` as top-level names
would overwrite InterpretML's package (``pip install interpret``) or any project's ``server``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Local folders that are not part of the source tree (venv, data, build output).
NOT_SOURCE = (".git", ".venv", "data", "stores", "runs", "reports", "build", "dist", "*.egg-info",
              "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules")  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel offline from a copy of the source tree (the checkout stays clean)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "--no-index", "-q", "-w", str(out), str(src)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    (built,) = out.glob("lstmscope-*.whl")
    return built


@pytest.mark.slow
def test_wheel_installs_one_package_named_lstmscope(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"lstmscope"}, top
    for needed in (
        "lstmscope/__main__.py",
        "lstmscope/store/reader.py",
        "lstmscope/demo/model.safetensors",
        "lstmscope/demo/vocab.json",
        "lstmscope/server/main.py",
        "lstmscope/server/app_hooks.py",
        "lstmscope/server/templates/index.html",
        "lstmscope/server/theme.yaml",
        "lstmscope/server/components/textview.py",
    ):
        assert needed in names, needed
    (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "lstmscope = lstmscope.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """Installed from the wheel (not the editable checkout): the CLI, the demo model and the
    dashboard's files are found, and nothing named ``interpret`` or ``server`` is importable."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    "--target", str(site), str(wheel)], check=True, timeout=300)  # fmt: skip
    # PYTHONPATH comes before the venv's editable-install finder, so the wheel's copy is used.
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = (
        "import importlib.util, lstmscope, lstmscope.server.serve as s;"
        "print(lstmscope.__file__); print(s.SERVER_DIR);"
        "print(importlib.util.find_spec('interpret'), importlib.util.find_spec('server'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout.split("\n")  # fmt: skip
    assert out[0].startswith(str(site / "lstmscope")), out
    assert (Path(out[1]) / "main.py").is_file() and out[1].startswith(str(site)), out
    assert out[2] == "None None", out
    info = subprocess.run([sys.executable, "-m", "lstmscope", "info", "demo"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert "lstm" in info.stdout.lower()
