"""The deployment record and what deploying needs from a chain.

`Deployment` is the content of a deployment manifest (addresses, ids, the steps done);
`Backend` is the interface the deployment sequence (`keeper.chain.deploy`) drives. Kept apart
from the sequence so that the manifest, the client and governance read the record without
importing the code that deploys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

ZERO_ADDRESS = "0x" + "00" * 20


class Backend(Protocol):
    """What deployment needs from a chain backend.

    Optional extras, used when present: `last_block` / `last_gas` (block and gas of the last
    transaction, recorded per step), `at(name, address)` (a handle on a deployed contract) and
    `view(contract, fn, *args)` (a read-only call), both needed to resume a deployment or to
    use existing tokens and feeds, and `code_at(address) -> bytes`.
    """

    def deploy(self, name: str, *args: Any) -> Any:
        """Deploy contract `name` (see `artifacts.NAMES`) and return a handle with `.address`."""

    def transact(self, contract: Any, fn: str, *args: Any) -> Any:
        """Send a state-changing call; raise if it reverts; return its return value if known."""

    def timestamp(self) -> int:
        """Latest block timestamp, unix seconds."""


@dataclass
class Deployment:
    """Addresses and ids of a deployed protocol: the content of a deployment manifest."""

    chain_id: int
    oracle: str
    vault: str
    engine: str
    settlement_token: str
    settlement_decimals: int
    tokens: dict[str, str] = field(default_factory=dict)  # asset symbol -> token address
    asset_ids: dict[str, int] = field(default_factory=dict)  # asset symbol -> vault asset id
    asset_decimals: dict[str, int] = field(default_factory=dict)
    feeds: dict[str, str] = field(default_factory=dict)  # price id symbol -> its (first) feed
    feed_decimals: dict[str, int] = field(default_factory=dict)
    price_ids: dict[str, int] = field(default_factory=dict)
    underlyings: dict[str, int] = field(default_factory=dict)
    markets: dict[str, int] = field(default_factory=dict)  # market name -> market id
    market_expiries: dict[str, int] = field(default_factory=dict)  # futures only
    admin: str = ""
    lens: str = ""  # MarginLens: batched views for keepers
    matching: str = ""  # Matching: signed orders for every instrument
    engine_liquidation: str = ""  # EngineLiquidation: the code MarginEngine.liquidate runs
    engine_deleveraging: str = ""  # EngineDeleveraging: the code MarginEngine.deleverage runs
    deploy_block: int = 0
    compiler: str = ""
    timelock: str = ""  # holds admin + risk_admin when the config has `governance`
    deployer: str = ""
    deployed_at: int = 0  # block timestamp of the last step, unix seconds
    blocks: dict[str, int] = field(default_factory=dict)  # manifest field ("engine", "tokens.WETH") -> block
    parameters: dict = field(default_factory=dict)  # the config as deployed (`config_echo`)
    status: str = "complete"  # "partial" while steps remain
    steps: dict[str, dict] = field(default_factory=dict)  # step -> {"block", "gas"[, "address", "expiry"]}
    option_market: str = ""  # OptionMarket ("" = no options)
    vol_feed: str = ""  # VolFeed
    health_attestor: str = ""  # HealthAttestor (its position version source is the engine)
    option_liquidation: str = ""  # OptionLiquidation: the code OptionMarket.liquidate_options runs
    option_series: dict[str, int] = field(default_factory=dict)  # "ETH-30D-C-2200" -> series id
    backstop_vault: str = ""  # BackstopVault ("" = none): a depositor-owned liquidator
    # manifest field ("engine", "timelock") -> its contract's committed ABI, relative to the
    # repository root ("abi/MarginEngine.json", written by bin/abi); mocks have none
    abis: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)
