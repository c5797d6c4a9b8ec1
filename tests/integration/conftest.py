"""Fixtures shared by the Anvil tests."""

from __future__ import annotations

import pytest

from keeper.chain.anvil import Anvil


@pytest.fixture(scope="module")
def replay_chain():
    """An Anvil (base fee 0) that outlives a replay run on it, so that a test can read its events
    and state afterwards (a replay without `rpc` stops its own Anvil at the end)."""
    with Anvil(extra_args=("--base-fee", "0")) as url:
        yield url
