"""Shared fixtures. Contract tests run in-process on titanoboa, deploying exactly what
`keeper.chain.deploy.deploy_protocol` deploys on a real chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import profiles  # registers the hypothesis profiles ci, dev and deep (tests/profiles.py)


def pytest_configure(config) -> None:
    name = config.getoption("hypothesis_profile", default=None)
    if name in profiles.NAMES:
        profiles.select(name)


DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_file(name: str) -> Path:
    """A market data file from the `shared/data` folder beside the clone, or skip the test."""
    path = DATA_DIR / name
    if not path.exists():
        pytest.skip(f"market data {name} not found in {DATA_DIR} (the shared/data folder beside the clone)")
    return path
