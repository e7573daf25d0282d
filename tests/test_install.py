"""Issue 29: the microscope-PC install, for real. A wheel built from this checkout is installed with the one command
docs/instruments.md gives (``pip install --no-deps napari-hae numpy scipy pyzmq``) into a fresh virtual environment
that holds nothing else; there ``napari-hae --version`` and ``--help`` answer, ``napari-hae serve`` serves the
bundled sample, and a full ``napari-hae run`` from this (the analysis) environment drives it to the end.

No network at test time: numpy, scipy and pyzmq are the very files of this environment's installs (copied by their
RECORD into a local folder pip installs them from, as wheels would be), the wheel is built without build isolation.
"""

import email
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest

import napari_hae

ROOT = Path(__file__).resolve().parents[1]
SERVER_ONLY = ("numpy", "scipy", "pyzmq")   # what docs/instruments.md tells a microscope PC to install beside it
pytestmark = pytest.mark.slow


def _venv_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _script(env: Path, name: str) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin") / (name + (".exe" if os.name == "nt" else ""))


def _copy_distribution(name: str, site: Path) -> None:
    """Every file of installed distribution ``name`` (its RECORD) into ``site``: the install as a wheel gives it."""
    dist = md.distribution(name)
    for f in dist.files:
        src = Path(dist.locate_file(f)).resolve()
        if ".." in f.parts or not src.is_file():   # scripts outside site-packages; __pycache__ entries removed
            continue
        dst = site / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from this checkout (no build isolation: no network)."""
    out = tmp_path_factory.mktemp("wheels")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    if built.returncode:
        pytest.fail(f"the wheel did not build: {built.stderr[-2000:]}")
    return next(out.glob("napari_hae-*.whl"))


@pytest.fixture(scope="module")
def microscope_pc(tmp_path_factory, wheel):
    """A fresh environment holding the checkout's wheel and numpy, scipy, pyzmq only."""
    tmp = tmp_path_factory.mktemp("microscope_pc")
    env = tmp / "env"
    venv.EnvBuilder(with_pip=False, clear=True).create(env)
    py = _venv_python(env)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for name in SERVER_ONLY:
        _copy_distribution(name, site)
    # the one command of docs/instruments.md, with the wheel in place of the registry's copy
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                              "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    return env


def _wheel_metadata(wheel: Path) -> tuple[email.message.Message, set[str]]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(meta)), set(z.namelist())


def test_the_wheel_carries_its_licence_and_the_hubs_links(wheel):
    """The hub shows a plugin's licence and its source, issue and documentation links from the package metadata;
    the wheel had no licence file and no Project-URL."""
    meta, names = _wheel_metadata(wheel)
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta["License-File"] == "LICENSE" and any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    source = urls["Source Code"]
    assert source.startswith("https://") and set(urls) == {"Source Code", "Bug Tracker", "User Support",
                                                           "Documentation"}
    assert all(u.startswith(source) for u in urls.values()), urls
    assert "Framework :: napari" in meta.get_all("Classifier")


def test_every_link_of_the_readme_is_absolute_and_names_a_file_of_this_checkout(wheel):
    """README is the page on PyPI and on the napari hub, where a relative link or image is broken. Each link into
    the project is absolute under the Source Code address and names a file that exists here (the hub resolves
    nothing else)."""
    meta, _ = _wheel_metadata(wheel)
    source = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))["Source Code"]
    raw = source.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    readme = meta.get_payload()
    assert readme.strip() == (ROOT / "README.md").read_text(encoding="utf-8").strip()
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", readme)
    assert len(targets) >= 10
    relative = [t for t in targets if not re.match(r"(https?:|#)", t)]
    assert relative == []
    ours = [t for t in targets if t.startswith((source, raw))]
    assert len(ours) >= 10
    for t in ours:
        path = t.split("#")[0].removeprefix(raw).removeprefix(source + "/blob/main/").removeprefix(
            source + "/tree/main/")
        assert (ROOT / path).exists(), f"README links to {t}, but {path} is not in the checkout"


def _installed(env: Path) -> set[str]:
    out = subprocess.run([str(_venv_python(env)), "-c", "import importlib.metadata as md; "
                          "print('\\n'.join(sorted(d.metadata['Name'].lower() for d in md.distributions())))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_microscope_pc_environment_holds_only_what_the_guide_says(microscope_pc):
    assert _installed(microscope_pc) == {"napari-hae", *SERVER_ONLY}
    guide = (ROOT / "docs" / "instruments.md").read_text(encoding="utf-8")
    assert "pip install --no-deps napari-hae numpy scipy pyzmq" in guide


def test_version_and_help_answer_on_the_microscope_pc(microscope_pc):
    """They ended in ModuleNotFoundError: No module named 'pydantic'."""
    exe = _script(microscope_pc, "napari-hae")
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr[-2000:]
    assert version.stdout.strip() == f"napari-hae {napari_hae.__version__}"
    helped = subprocess.run([str(_venv_python(microscope_pc)), "-m", "napari_hae", "serve", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "--microscope" in helped.stdout
    # what it cannot do there, it says: the package missing and the fix, not a traceback
    refused = subprocess.run([str(exe), "run", "--sample", "nanoparticles"], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert refused.stderr.startswith("error: 'napari-hae run' needs the package 'pydantic', which this install lacks")
    assert "Fix: install napari-hae with its dependencies" in refused.stderr


def test_a_full_run_from_the_analysis_pc_drives_the_microscope_pc_server(microscope_pc, tmp_path):
    server = subprocess.Popen([str(_script(microscope_pc, "napari-hae")), "serve", "--sample", "nanoparticles",
                               "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()   # "serving ... on tcp://127.0.0.1:PORT"
        address = re.search(r"tcp://[\d.]+:\d+", line)
        assert address, (line, server.stderr.read() if server.poll() is not None else "")
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "napari_hae", "run", "--microscope", address.group(0),
                              "--steps", "3", "--out", str(tmp_path / "run"), "--model-param", "hidden=[16,8]"],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["policy_steps"] == 3 and summary["complete"] and (tmp_path / "run" / "trace.h5").is_file(), summary
    assert time.perf_counter() - t0 < 600
