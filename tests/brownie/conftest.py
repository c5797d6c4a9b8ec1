"""Brownie + Anvil tests: they run under brownie's pytest plugin (auto-loaded in this brownie project).

The plugin starts Anvil itself (the `development` network of brownie-config.yaml, `anvil` from
node_modules/.bin) once some test is collected. Here:

* the Anvil port is a free one, chosen per session: brownie *attaches* to any node already on its
  configured port (8545), so two test sessions at once (or a developer's own Anvil) would share one
  chain (sessions that select no test from this folder leave the port alone: they never use it);
* without the plugin (`python -m pytest -p no:pytest-brownie ...`) these tests are skipped instead
  of failing on missing fixtures.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _brownie_active(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin("pytest-brownie")


def pytest_configure(config: pytest.Config) -> None:
    if not _brownie_active(config):
        return
    import brownie
    from brownie._config import CONFIG

    if brownie.network.is_connected():
        return
    name = CONFIG.argv["network"] or CONFIG.settings["networks"]["default"]
    net = CONFIG.networks.get(name, {})
    local = any(h in str(net.get("host", "")) for h in ("127.0.0.1", "localhost"))
    if "cmd" in net and local and isinstance(net.get("cmd_settings"), dict):
        # brownie launches the node it connects to on this port (see brownie.network.main.connect)
        net["cmd_settings"]["port"] = _free_port()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _brownie_active(config):
        return
    skip = pytest.mark.skip(reason="needs brownie's pytest plugin (disabled with -p no:pytest-brownie)")
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(skip)
