from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import BoaProtocol


@pytest.fixture(scope="session")
def _deployed() -> BoaProtocol:
    return BoaProtocol.deploy()


@pytest.fixture
def protocol(_deployed: BoaProtocol):
    """A freshly deployed protocol (state rolled back after each test)."""
    with boa.env.anchor():
        yield _deployed
