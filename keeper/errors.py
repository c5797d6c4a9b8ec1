"""The keeper's exception root, and the errors that cross layers.

Every error the keeper raises on purpose derives from :class:`KeeperError` (as web3.py's derive
from ``Web3Exception``): a command catches ``KeeperError`` and prints its one-line message instead
of a traceback. Each error also keeps the built-in base it had before the root existed
(``ValueError`` for bad input, ``RuntimeError`` for a failed operation, ``ConnectionError`` for
transport), so code that catches the built-in types still does.

Most error classes live beside the code that raises them; the two defined here are raised by more
than one layer: :class:`ConfigError` by the YAML loaders (`keeper.config`) and by the risk engine's
parameter checks (`keeper.risk.scenarios.ScenarioParams`), :class:`PriceDataError` by the market
data loaders (`keeper.marketdata`) and the command line. Ground floor: imports nothing from `keeper`.
"""

from __future__ import annotations

__all__ = ["ConfigError", "KeeperError", "PriceDataError"]


class KeeperError(Exception):
    """Root of the errors the keeper raises on purpose; the message is one line meant for a human."""


class ConfigError(KeeperError, ValueError):
    """A protocol configuration file is missing, malformed or inconsistent."""


class PriceDataError(KeeperError, ValueError):
    """Bad price data or price argument; the message is one line meant for a human."""
