"""The files the keeper ships besides its code, and where it caches what it compiles from them:
the one place that resolves their paths.

    contracts/   the Vyper sources the keeper compiles and deploys (`keeper.chain.artifacts`)
    abi/         the committed ABIs of the deployable contracts (`bin/abi` writes them)
    config/      the default listings and parameters (`local.yaml`, `options.yaml`,
                 `portfolio_margin.yaml`, the examples)

In a checkout (the package imported from the repository, an editable install included) these are
the checkout's folders, so an edited contract or config is what runs, and compiled artifacts are
cached under the checkout's `build/`. An installed wheel carries them as package data,
`keeper/_data/<folder>/` (pyproject.toml maps the three folders there), and caches under
`$KEEPER_CACHE_DIR`, else `$XDG_CACHE_HOME/crossmargin-keeper`, else `~/.cache/crossmargin-keeper`.

The market data is not shipped: its folder is a setting (`keeper.marketdata.daily.data_dir`).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from keeper.errors import KeeperError

FOLDERS = ("contracts", "abi", "config")  # what the wheel carries, under keeper/_data/
DATA_PACKAGE = "_data"  # keeper/_data/ in an installed wheel
CACHE_DIR_ENV = "KEEPER_CACHE_DIR"
CACHE_NAME = "crossmargin-keeper"


class ResourceError(KeeperError, RuntimeError):
    """The shipped files cannot be found (a broken install, or a package imported from a zip)."""


def checkout_root() -> Path | None:
    """The repository the package is imported from, or None for an installed package."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "contracts").is_dir():
        return root
    return None


def data_root() -> Path:
    """The folder holding contracts/, abi/ and config/: the checkout, else the package data."""
    root = checkout_root()
    if root is not None:
        return root
    shipped = files("keeper").joinpath(DATA_PACKAGE)
    if not isinstance(shipped, Path) or not shipped.is_dir():
        raise ResourceError(
            f"the keeper's package data ({DATA_PACKAGE}/: {', '.join(FOLDERS)}) is not a folder on disk "
            f"next to {Path(__file__).parent}: reinstall the package from its wheel"
        )
    return shipped


def contracts_dir() -> Path:
    """The Vyper sources: `contracts/` (the compiler's search path for `lib/` and `mocks/`)."""
    return data_root() / "contracts"


def abi_file(contract: str) -> Path:
    """The committed ABI of deployable `contract`: `abi/<contract>.json`."""
    return data_root() / "abi" / f"{contract}.json"


def config_file(name: str) -> Path:
    """A default config by file name (`local.yaml`, `portfolio_margin.yaml`): `config/<name>`."""
    return data_root() / "config" / name


def cache_dir(kind: str) -> Path:
    """Where compiled artifacts of `kind` ("keeper", "abi") are cached, keyed by the source hash:
    the checkout's `build/<kind>/`, else a per-user cache (`$KEEPER_CACHE_DIR`), never the
    installed package's folder."""
    root = checkout_root()
    if root is not None:
        return root / "build" / kind
    base = os.environ.get(CACHE_DIR_ENV)
    if base:
        return Path(base) / kind
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / CACHE_NAME / kind
