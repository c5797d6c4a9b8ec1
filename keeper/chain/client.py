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


    # ------------------------------------------------------------------ keeper additions

    def protocol_logs(self, from_block: int, to_block: int) -> list[ProtocolLog]:
        """Deposit (vault), PositionChanged and Liquidation (engine) logs in [from_block,
        to_block], oldest first, from one eth_getLogs call (addresses and topic0 OR-ed)."""
        events = {
            "Deposit": self.vault.events.Deposit(),
            "PositionChanged": self.engine.events.PositionChanged(),
            "Liquidation": self.engine.events.Liquidation(),
        }
        by_topic = {}
        for name, event in events.items():
            abi = event.abi
            signature = f"{name}({','.join(i['type'] for i in abi['inputs'])})"
            by_topic[Web3.keccak(text=signature)] = event
        raw = self.w3.eth.get_logs(
            {
                "fromBlock": from_block,
                "toBlock": to_block,
                "address": [self.vault.address, self.engine.address],
                "topics": [list(by_topic)],
            }
        )
        out: list[ProtocolLog] = []
        for entry in raw:
            event = by_topic.get(bytes(entry["topics"][0])) if entry["topics"] else None
            if event is None or entry.get("removed"):
                continue
            decoded = event.process_log(entry)
            out.append(
                ProtocolLog(
                    event=decoded["event"],
                    account=decoded["args"]["account"],
                    block=entry["blockNumber"],
                    block_hash="0x" + bytes(entry["blockHash"]).hex(),
                    tx_hash="0x" + bytes(entry["transactionHash"]).hex(),
                    args=dict(decoded["args"]),
                )
            )
        out.sort(key=lambda p: p.block)
        return out

    def liquidation_terms(self, block: int | str = "latest") -> LiquidationTerms:
        """The engine's penalty, its ramp and the liquidator's share (WAD fractions, seconds)."""
        e = self.engine.functions
        return LiquidationTerms(
            penalty=e.liquidation_penalty().call(block_identifier=block),
            max_penalty=e.max_liquidation_penalty().call(block_identifier=block),
            ramp_seconds=e.penalty_ramp_time().call(block_identifier=block),
            liquidator_share=e.liquidator_share().call(block_identifier=block),
        )

    def liquidatable_since(self, account: str, block: int | str = "latest") -> int:
        """Timestamp the account was flagged (0 = not flagged)."""
        return self.engine.functions.liquidatable_since(account).call(block_identifier=block)


@dataclass(frozen=True)
class ProtocolLog:
    """One decoded protocol event: `event` is Deposit, PositionChanged or Liquidation."""

    event: str
    account: str
    block: int
    block_hash: str
    tx_hash: str
    args: dict


@dataclass(frozen=True)
class LiquidationTerms:
    """MarginEngine's liquidation parameters, WAD fractions (penalty 2e16 = 2%) and seconds."""

    penalty: int
    max_penalty: int
    ramp_seconds: int
    liquidator_share: int

    def penalty_rate(self, flagged_at: int, now: int) -> int:
        """The penalty rate for an account flagged at `flagged_at` (0 = never), at time `now`:
        MarginEngine._penalty_rate: base, growing linearly to max over the ramp; a flag older
        than two ramps earns no bonus. WAD, rounded down as the contract does."""
        top = max(self.penalty, self.max_penalty)
        if flagged_at == 0 or top == self.penalty or self.ramp_seconds == 0 or now - flagged_at >= 2 * self.ramp_seconds:
            return self.penalty
        elapsed = min(max(now - flagged_at, 0), self.ramp_seconds)
        return self.penalty + (top - self.penalty) * elapsed // self.ramp_seconds


def connect_any(urls: Sequence[str], timeout: float = 10.0) -> Web3:
    """A Web3 over FallbackProvider(urls) (see keeper.chain.rpc), checked like `connect`: raises
    ChainError with one line if no endpoint answers eth_chainId with a chain id."""
    from keeper.chain.rpc import EndpointError, FallbackProvider

    if isinstance(urls, str) or not urls:
        raise ChainError(f"RPC URLs must be a non-empty list, got {urls!r}")
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ChainError(f"RPC URL must start with http:// or https://: {url!r}")
    w3 = Web3(FallbackProvider(urls, timeout=timeout, max_attempts=len(urls), backoff_initial=0.05, backoff_max=0.5))
    try:
        chain_id = w3.eth.chain_id
    except (EndpointError, requests.RequestException, Web3Exception, OSError, ValueError) as e:
        raise ChainError(f"cannot reach RPC at {', '.join(urls)}: {e.__class__.__name__}") from None
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id < 0:
        raise ChainError(f"RPC at {', '.join(urls)} answered eth_chainId with {chain_id!r}, not a chain id")
    w3.provider.max_attempts = max(3, 2 * len(urls))  # connected: ride out short outages
    return w3
