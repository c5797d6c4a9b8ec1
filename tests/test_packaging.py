"""The package works outside a checkout: the contracts' sources, their ABIs and the default
configs ship in the wheel as package data (pyproject.toml), and `keeper.resources` is the one
place that finds them: the checkout's folders in a checkout, `keeper/_data/` in an install."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from keeper import resources
from keeper.chain.abis import deployables
from keeper.chain.artifacts import NAMES
from keeper.config import DEFAULT_CONFIG, DEFAULT_PM_CONFIG

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("local.yaml", "options.yaml", "portfolio_margin.yaml")
# what the wheel is built from (pyproject.toml's packages and package data, the license it names)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "keeper", *resources.FOLDERS)


def shipped_files() -> list[str]:
    """Every file the wheel must carry besides the code, as `<folder>/<path>` of the checkout."""
    patterns = {"contracts": "**/*.vy", "abi": "*.json", "config": "*.yaml"}
    return sorted(
        str(p.relative_to(ROOT)) for folder, pattern in patterns.items() for p in (ROOT / folder).glob(pattern)
    )


def test_a_checkout_reads_its_own_files():
    assert resources.checkout_root() == ROOT
    assert resources.data_root() == ROOT
    assert resources.cache_dir("keeper") == ROOT / "build" / "keeper"


def test_every_deployable_and_default_config_resolves_to_a_file():
    for name in deployables():
        assert (resources.contracts_dir() / NAMES[name]).is_file(), name
        assert resources.abi_file(name).is_file(), name
    for source in NAMES.values():  # the mocks too: the dev commands deploy them
        assert (resources.contracts_dir() / source).is_file(), source
    for name in DEFAULT_CONFIGS:
        assert resources.config_file(name).is_file(), name
    assert DEFAULT_CONFIG == resources.config_file("local.yaml")
    assert DEFAULT_PM_CONFIG == resources.config_file("portfolio_margin.yaml")


def test_an_install_reads_the_package_data(monkeypatch, tmp_path):
    package = tmp_path / "site-packages" / "keeper"
    (package / resources.DATA_PACKAGE / "config").mkdir(parents=True)
    monkeypatch.setattr(resources, "checkout_root", lambda: None)
    monkeypatch.setattr(resources, "files", lambda name: package)
    assert resources.data_root() == package / "_data"
    assert resources.config_file("local.yaml") == package / "_data" / "config" / "local.yaml"
    assert resources.abi_file("MarginEngine") == package / "_data" / "abi" / "MarginEngine.json"
    monkeypatch.setenv(resources.CACHE_DIR_ENV, str(tmp_path / "cache"))
    assert resources.cache_dir("keeper") == tmp_path / "cache" / "keeper"
    monkeypatch.delenv(resources.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resources.cache_dir("abi") == tmp_path / "xdg" / "crossmargin-keeper" / "abi"
    shutil.rmtree(package / resources.DATA_PACKAGE)
    with pytest.raises(resources.ResourceError, match="reinstall"):
        resources.data_root()


@pytest.mark.skipif(
    importlib.util.find_spec("setuptools") is None or importlib.util.find_spec("wheel") is None,
    reason="the build backend (setuptools, wheel) is not installed: cannot build the wheel offline",
)
def test_the_wheel_carries_the_code_and_the_package_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:  # a copy: the build writes build/ and *.egg-info next to the sources
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", out, src],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    code = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "keeper").rglob("*.py") if "__pycache__" not in p.parts)
    assert [f for f in code if f not in names] == [], "a keeper package is missing from pyproject.toml's list"
    data = [f"keeper/{resources.DATA_PACKAGE}/{f}" for f in shipped_files()]
    assert [f for f in data if f not in names] == []
    for needed in ("contracts/MarginEngine.vy", "abi/MarginEngine.json", "config/local.yaml"):
        assert f"keeper/{resources.DATA_PACKAGE}/{needed}" in names
