"""Checks `bin/deploy` and `bin/verify` run before `brownie run`, so that a missing setting is
one line instead of a brownie traceback:

- the brownie network's RPC URL needs an environment variable that is not set (brownie's
  `sepolia` is `https://sepolia.infura.io/v3/$WEB3_INFURA_PROJECT_ID`);
- the protocol config (PROTOCOL_CONFIG, default config/local.yaml) does not load, or has no
  `governance:` section for a non-development network.

    python -m keeper.chain.preflight [brownie run arguments ...]     # exit 1 with one line
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Mapping, Sequence

from keeper.errors import KeeperError

_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


class PreflightError(KeeperError, RuntimeError):
    """A setting the deployment needs is missing: one line saying which and how to set it."""


def network_name(argv: Sequence[str]) -> str:
    """The `--network NAME` (or `--network=NAME`) of a `brownie run` command line; default development."""
    for i, arg in enumerate(argv):
        if arg == "--network" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--network="):
            return arg.split("=", 1)[1]
    return "development"


def check_host(name: str, network: Mapping, env: Mapping[str, str]) -> None:
    """Raise PreflightError if the network's host names environment variables that are unset."""
    host = str(network.get("host") or "")
    missing = [v for v in _VAR.findall(host) if not env.get(v)]
    if missing:
        raise PreflightError(
            f"network {name} takes its RPC URL from {host}: set {' and '.join(missing)} "
            f"(export {missing[0]}=...), or point the network at another endpoint: "
            f".venv/bin/brownie networks modify {name} host=https://..."
        )


def check_config(path: Path, development: bool) -> None:
    """Raise PreflightError if the protocol config does not load or lacks governance on a live network."""
    from keeper.config import ConfigError, load_config, with_default_governance

    try:
        with_default_governance(load_config(path), "0x" + "00" * 19 + "01", development)
    except ConfigError as e:
        text = str(e)
        raise PreflightError(text if text.startswith(str(path)) else f"{path}: {text}") from None


def preflight(argv: Sequence[str], networks: Mapping[str, Mapping], env: Mapping[str, str], root: Path) -> None:
    name = network_name(argv)
    network = networks.get(name)
    if network is None:
        return  # brownie reports an unknown network itself
    check_host(name, network, env)
    config = Path(env.get("PROTOCOL_CONFIG") or root / "config" / "local.yaml")
    check_config(config, development="cmd" in network)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from brownie._config import CONFIG

    try:
        preflight(argv, CONFIG.networks, os.environ, Path.cwd())
    except PreflightError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
