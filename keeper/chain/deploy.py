"""Deploy the protocol and its local-chain mocks from a `ProtocolConfig`.

Backend-agnostic: the same sequence deploys through web3.py to any RPC endpoint (the replay,
the CLI) and through titanoboa in-process (the contract tests), so both test exactly what users
deploy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from keeper.config import ProtocolConfig


class Backend(Protocol):
    """What deployment needs from a chain backend."""

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
    feeds: dict[str, str] = field(default_factory=dict)  # price id symbol -> mock aggregator
    feed_decimals: dict[str, int] = field(default_factory=dict)
    price_ids: dict[str, int] = field(default_factory=dict)
    underlyings: dict[str, int] = field(default_factory=dict)
    markets: dict[str, int] = field(default_factory=dict)  # market name -> market id
    market_expiries: dict[str, int] = field(default_factory=dict)  # futures only
    admin: str = ""
    lens: str = ""  # MarginLens: batched views for keepers
    deploy_block: int = 0
    compiler: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def deploy_protocol(backend: Backend, config: ProtocolConfig, admin: str, chain_id: int) -> Deployment:
    """Deploy mock tokens and feeds, the oracle router, vault and engine, then list everything
    in `config`. `admin` must be the backend's sender; it ends up holding both roles."""
    settlement = backend.deploy("MockERC20", "USD Coin", config.settlement_symbol, config.settlement_decimals)
    oracle = backend.deploy("OracleRouter", admin)
    dep_feeds: dict[str, str] = {}
    feed_decimals: dict[str, int] = {}
    price_ids: dict[str, int] = {}
    for i, p in enumerate(config.price_ids):
        feed = backend.deploy(
            "MockAggregator", p.feed_decimals, f"{p.symbol} / USD", p.initial_price * 10**p.feed_decimals
        )
        backend.transact(oracle, "add_price_id", p.symbol)
        backend.transact(oracle, "set_feeds", i, [feed.address], [p.heartbeat])
        dep_feeds[p.symbol] = feed.address
        feed_decimals[p.symbol] = p.feed_decimals
        price_ids[p.symbol] = i
    vault = backend.deploy("CollateralVault", admin, settlement.address, oracle.address)
    engine = backend.deploy("MarginEngine", admin, vault.address, oracle.address)
    backend.transact(vault, "set_engine", engine.address)
    lens = backend.deploy("MarginLens", engine.address, vault.address)
    tokens: dict[str, str] = {}
    asset_ids: dict[str, int] = {}
    asset_decimals: dict[str, int] = {}
    for i, a in enumerate(config.assets):
        token = backend.deploy("MockERC20", f"Wrapped {a.symbol}", a.symbol, a.decimals)
        backend.transact(vault, "list_asset", token.address, a.price_id, a.haircut, a.deposit_cap)
        tokens[a.symbol] = token.address
        asset_ids[a.symbol] = i
        asset_decimals[a.symbol] = a.decimals
    # liquidation parameters first: underlying bounds check mm_rate against the penalty
    backend.transact(
        engine, "set_liquidation_params", config.liquidation_penalty, config.liquidator_share, config.liquidation_target
    )
    backend.transact(
        engine, "set_trade_params", config.max_price_deviation, config.max_funding_rate, config.funding_smoothing
    )
    underlyings: dict[str, int] = {}
    for i, u in enumerate(config.underlyings):
        backend.transact(
            engine, "add_underlying", u.price_id, u.im_rate, u.mm_rate, u.spread_im_rate, u.spread_mm_rate
        )
        underlyings[u.symbol] = i
    if config.max_liquidation_penalty:
        backend.transact(engine, "set_penalty_ramp", config.max_liquidation_penalty, config.penalty_ramp_time)
    markets: dict[str, int] = {}
    expiries: dict[str, int] = {}
    now = backend.timestamp()
    for i, m in enumerate(config.markets):
        expiry = 0 if m.expiry_days is None else now + int(m.expiry_days * 86400)
        backend.transact(engine, "list_market", m.underlying, expiry)
        if m.max_open_interest or m.max_position:
            backend.transact(engine, "set_position_caps", i, m.max_open_interest, m.max_position)
        markets[m.name] = i
        if expiry:
            expiries[m.name] = expiry
    return Deployment(
        chain_id=chain_id,
        oracle=oracle.address,
        vault=vault.address,
        engine=engine.address,
        settlement_token=settlement.address,
        settlement_decimals=config.settlement_decimals,
        tokens=tokens,
        asset_ids=asset_ids,
        asset_decimals=asset_decimals,
        feeds=dep_feeds,
        feed_decimals=feed_decimals,
        price_ids=price_ids,
        underlyings=underlyings,
        markets=markets,
        market_expiries=expiries,
        admin=admin,
        lens=lens.address,
    )


class DeployError(RuntimeError):
    """A deployment transaction reverted or could not be sent."""


class Web3Backend:
    """Deploys through web3.py from an account the node can sign for (e.g. Anvil's dev accounts)."""

    def __init__(self, w3, sender: str):
        from keeper.chain.artifacts import load_artifact

        self.w3 = w3
        self.sender = sender
        self._load = load_artifact

    def _wait(self, tx_hash, what: str):
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        if receipt["status"] != 1:
            raise DeployError(f"{what} reverted (tx {tx_hash.hex()})")
        return receipt

    def deploy(self, name: str, *args):
        art = self._load(name)
        factory = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = self._wait(factory.constructor(*args).transact({"from": self.sender}), f"deploying {name}")
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)

    def transact(self, contract, fn: str, *args):
        tx_hash = getattr(contract.functions, fn)(*args).transact({"from": self.sender})
        self._wait(tx_hash, fn)

    def timestamp(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]
