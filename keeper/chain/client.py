"""web3.py client for a deployed protocol: connection, batched reads pinned to one block,
account discovery from events, and conversion of raw state into the risk engine's arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import requests
from web3 import Web3
from web3.exceptions import Web3Exception

from keeper.chain.artifacts import load_artifact
from keeper.chain.deploy import Deployment
from keeper.risk.margin import AccountBook, MarketTable, RiskParams

# account_states / margin_summaries accept at most 500 accounts; 200 keeps each eth_call small.
BATCH = 200


class ChainError(RuntimeError):
    """The RPC endpoint cannot be reached, or answers for another chain or deployment."""


def connect(url: str, timeout: float = 10.0) -> Web3:
    """A Web3 connected to `url`. Raises ChainError with one clear line if it does not answer
    (within about `timeout` seconds) or does not answer with a chain id.

    The provider does not retry failed requests (web3's default is 5 retries with backoff, which
    makes a silent endpoint take about 6 x `timeout`): the keeper's loop retries with its own
    backoff."""
    if not isinstance(url, str):
        raise ChainError(f"RPC URL must be a string like http://127.0.0.1:8545, got {url!r}")
    if not url.startswith(("http://", "https://")):
        raise ChainError(f"RPC URL must start with http:// or https://: {url!r}")
    provider = Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
    w3 = Web3(provider)
    try:
        chain_id = w3.eth.chain_id
    except (requests.RequestException, Web3Exception, OSError, ValueError) as e:
        raise ChainError(f"cannot reach RPC at {url}: {e.__class__.__name__}") from None
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id < 0:
        answer = "null" if chain_id is None else repr(chain_id)
        raise ChainError(f"RPC at {url} answered eth_chainId with {answer}, not a chain id")
    return w3


@dataclass(frozen=True)
class Snapshot:
    """Everything the risk engine needs, read at one block."""

    block: int
    accounts: tuple[str, ...]
    prices: np.ndarray  # object (P,) WAD index prices by price id
    markets: MarketTable
    book: AccountBook


class ProtocolClient:
    """Typed access to the deployed oracle, vault and engine."""

    def __init__(self, w3: Web3, deployment: Deployment):
        self.w3 = w3
        self.deployment = deployment
        self.oracle = w3.eth.contract(address=deployment.oracle, abi=load_artifact("OracleRouter").abi)
        self.vault = w3.eth.contract(address=deployment.vault, abi=load_artifact("CollateralVault").abi)
        self.engine = w3.eth.contract(address=deployment.engine, abi=load_artifact("MarginEngine").abi)
        if not deployment.lens:
            raise ChainError("the deployment manifest has no lens address (MarginLens): redeploy or add it")
        self.lens = w3.eth.contract(address=deployment.lens, abi=load_artifact("MarginLens").abi)

    def check_chain(self) -> None:
        """Raise ChainError if the endpoint is another chain or has no engine at the address."""
        chain_id = self.w3.eth.chain_id
        if chain_id != self.deployment.chain_id:
            raise ChainError(f"RPC is chain {chain_id} but the manifest is for chain {self.deployment.chain_id}")
        if not self.w3.eth.get_code(self.deployment.engine):
            raise ChainError(f"no contract at the manifest's engine address {self.deployment.engine}")

    # ------------------------------------------------------------------ parameters

    def risk_params(self, block: int | str = "latest") -> RiskParams:
        """Margin rates of every underlying and haircuts of every asset, read from chain."""
        e, v = self.engine.functions, self.vault.functions
        n_u = e.underlying_count().call(block_identifier=block)
        underlyings = [e.underlyings(u).call(block_identifier=block) for u in range(n_u)]
        n_a = v.asset_count().call(block_identifier=block)
        assets = [v.assets(a).call(block_identifier=block) for a in range(n_a)]
        return RiskParams(
            price_id=np.array([u[0] for u in underlyings], dtype=np.int64),
            im_rate=np.array([u[1] for u in underlyings], dtype=object),
            mm_rate=np.array([u[2] for u in underlyings], dtype=object),
            spread_im_rate=np.array([u[3] for u in underlyings], dtype=object),
            spread_mm_rate=np.array([u[4] for u in underlyings], dtype=object),
            asset_price_id=np.array([a[2] for a in assets], dtype=np.int64),
            asset_decimals=np.array([a[1] for a in assets], dtype=np.int64),
            asset_haircut=np.array([a[3] for a in assets], dtype=object),
        )

    # ------------------------------------------------------------------ state

    def snapshot(self, accounts: Sequence[str], block: int) -> Snapshot:
        """Prices, markets and the raw state of `accounts`, all read at `block`."""
        prices = np.array(self.oracle.functions.index_prices().call(block_identifier=block), dtype=object)
        markets = self.lens.functions.market_states().call(block_identifier=block)
        states: list = []
        for i in range(0, len(accounts), BATCH):
            states += self.lens.functions.account_states(list(accounts[i : i + BATCH])).call(block_identifier=block)
        n_assets = self.vault.functions.asset_count().call(block_identifier=block)
        return Snapshot(
            block=block,
            accounts=tuple(accounts),
            prices=prices,
            markets=MarketTable.from_states(markets, self.w3.eth.get_block(block)["timestamp"]),
            book=AccountBook.from_states(states, n_assets, len(markets)),
        )

    def margin_summaries(self, accounts: Sequence[str], block: int | str = "latest") -> list[tuple]:
        """The contract's (equity, IM, MM, health) for each account, read at `block`."""
        out: list = []
        for i in range(0, len(accounts), BATCH):
            out += self.lens.functions.margin_summaries(list(accounts[i : i + BATCH])).call(block_identifier=block)
        return out

    def discover_accounts(self, from_block: int, to_block: int) -> set[str]:
        """Accounts that deposited or changed a position in [from_block, to_block]."""
        found: set[str] = set()
        for event in (self.vault.events.Deposit, self.engine.events.PositionChanged):
            for log in event.get_logs(from_block=from_block, to_block=to_block):
                found.add(log["args"]["account"])
        return found

    def liquidations(self, from_block: int, to_block: int) -> list[dict]:
        """Liquidation events in the range, oldest first, as dicts with the block number."""
        return [
            {**dict(log["args"]), "block": log["blockNumber"], "tx": log["transactionHash"].hex()}
            for log in self.engine.events.Liquidation.get_logs(from_block=from_block, to_block=to_block)
        ]

