"""web3.py client for a deployed protocol: connection, batched reads pinned to one block,
account discovery from events, and conversion of raw state into the risk engine's arrays."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import requests
from web3 import Web3
from web3.exceptions import BadFunctionCallOutput, ContractLogicError, Web3Exception

from keeper.chain.artifacts import load_artifact
from keeper.chain.deployment import Deployment
from keeper.chain.types import (
    AccountState,
    AssetInfo,
    MarginSummary,
    MarketState,
    OptionMargin,
    OptionState,
    SeriesState,
    UnderlyingRates,
)
from keeper.errors import KeeperError
from keeper.risk.book import RiskBook, SeriesInfo, VolPoint, build_book
from keeper.risk.margin import AccountBook, MarketTable, RiskParams

log = logging.getLogger("keeper.chain")

# account_states / margin_summaries accept at most 500 accounts, the lens's option and
# attestation views 200; 200 keeps each eth_call small.
BATCH = 200


# What a JSON-RPC call raises when the node or the transport fails (EndpointError, the fallback
# provider's, is a ConnectionError, so an OSError): the liquidator counts them as RPC errors and
# retries; `connect` turns them into one ChainError line.
RPC_ERRORS = (requests.RequestException, Web3Exception, OSError, ValueError)


class ChainError(KeeperError, RuntimeError):
    """The RPC endpoint cannot be reached, or answers for another chain or deployment."""


def rpc_failure(url: str, e: BaseException) -> str:
    """One line for a failed eth_chainId: "cannot reach" when nothing answered (refused, timed
    out, a bad URL), "answered badly" when a server answered with something that is not a
    JSON-RPC chain id (an HTML page, invalid JSON, an HTTP error status, a JSON-RPC error):
    the first is a network problem, the second usually a wrong URL or a broken node."""
    from web3.exceptions import BadResponseFormat, Web3RPCError

    from keeper.chain.rpc import EndpointError

    reason = getattr(e, "reason", "") if isinstance(e, EndpointError) else ""
    if (
        isinstance(e, requests.exceptions.JSONDecodeError)
        or (isinstance(e, ValueError) and "JSON" in e.__class__.__name__)
        or "other than JSON" in reason
    ):
        what = "not valid JSON (an HTML page or another service at this URL?)"
    elif isinstance(e, requests.HTTPError) or reason.startswith("HTTP"):
        status = getattr(getattr(e, "response", None), "status_code", None)
        what = f"HTTP {status}" if status else (reason or "an HTTP error status")
        what += ", not a JSON-RPC answer"
    elif isinstance(e, Web3RPCError):
        what = f"a JSON-RPC error ({e.__class__.__name__}) to eth_chainId"
    elif isinstance(e, BadResponseFormat):
        what = "something that is not a JSON-RPC response (BadResponseFormat)"
    elif isinstance(e, (requests.RequestException, OSError)) or isinstance(e, EndpointError):
        return f"cannot reach RPC at {url}: {reason or e.__class__.__name__}"
    elif isinstance(e, ValueError):
        what = f"an eth_chainId result that is not a number ({e.__class__.__name__})"
    else:
        return f"cannot reach RPC at {url}: {e.__class__.__name__}"
    return f"RPC at {url} answered badly: {what}"


def connect(url: str, timeout: float = 10.0) -> Web3:
    """A Web3 connected to `url`. Raises ChainError with one clear line if it does not answer
    (within about `timeout` seconds) or does not answer with a chain id.

    The provider does not retry failed requests (web3's default is 5 retries with backoff, which
    makes a silent endpoint take about 6 x `timeout`): the keeper's loop retries with its own
    backoff."""
    if not isinstance(url, str):
        raise ChainError(f"RPC URL must be a string like http://127.0.0.1:8545, got {url!r}")
    if url.startswith(("ws://", "wss://")):
        return connect_any([url], timeout=timeout)
    if not url.startswith(("http://", "https://")):
        raise ChainError(f"RPC URL must start with http://, https://, ws:// or wss://: {url!r}")
    provider = Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
    w3 = Web3(provider)
    try:
        chain_id = w3.eth.chain_id
    except RPC_ERRORS as e:
        raise ChainError(rpc_failure(url, e)) from None
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


@dataclass(frozen=True)
class BlockInputs:
    """The global inputs of a snapshot at `block`: `prices` object (P,) WAD index prices by price
    id, `markets` the market table, `n_assets` the vault's listed assets (columns of a book)."""

    block: int
    prices: np.ndarray
    markets: MarketTable
    n_assets: int


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
        # signed orders of every instrument go through the matching contract
        self.matching = (
            w3.eth.contract(address=deployment.matching, abi=load_artifact("Matching").abi)
            if deployment.matching
            else None
        )
        self._decoders: dict[bytes, _LogDecoder] | None = None  # see _log_decoders
        self._lens_batches = True  # False once the lens turns out to predate the batched module views

    def check_chain(self) -> None:
        """Raise ChainError if the endpoint is another chain or has no engine at the address
        (the first of `keeper.chain.startup`'s checks, which `keeper run` runs in full)."""
        from keeper.chain.startup import chain_problem, code_problems

        problem = chain_problem(self.w3, self.deployment)
        if problem is None:
            problem = next(iter(code_problems(self.w3, self.deployment, only=("engine",))), None)
        if problem is not None:
            raise ChainError(problem)

    # ------------------------------------------------------------------ parameters

    def risk_params(self, block: int | str = "latest") -> RiskParams:
        """Margin rates of every underlying and haircuts of every asset in force at `block`
        (a governance raise phases in over days: `MarginEngine.rates_now`, `haircut_now`)."""
        e, v = self.engine.functions, self.vault.functions
        n_u = e.underlying_count().call(block_identifier=block)
        underlyings = [UnderlyingRates.decode(e.rates_now(u).call(block_identifier=block)) for u in range(n_u)]
        n_a = v.asset_count().call(block_identifier=block)
        assets = [AssetInfo.decode(v.assets(a).call(block_identifier=block)) for a in range(n_a)]
        haircuts = [v.haircut_now(a).call(block_identifier=block) for a in range(n_a)]
        return RiskParams(
            price_id=np.array([u.price_id for u in underlyings], dtype=np.int64),
            im_rate=np.array([u.im_rate for u in underlyings], dtype=object),
            mm_rate=np.array([u.mm_rate for u in underlyings], dtype=object),
            spread_im_rate=np.array([u.spread_im_rate for u in underlyings], dtype=object),
            spread_mm_rate=np.array([u.spread_mm_rate for u in underlyings], dtype=object),
            asset_price_id=np.array([a.price_id for a in assets], dtype=np.int64),
            asset_decimals=np.array([a.decimals for a in assets], dtype=np.int64),
            asset_haircut=np.array(haircuts, dtype=object),
            **self.depeg_params(block),
        )

    def depeg_params(self, block: int | str = "latest") -> dict[str, int]:
        """The vault's depeg rule as `RiskParams` fields: settlement_price_id (-1 = cash 1:1),
        depeg_threshold, depeg_factor (WAD). A vault that predates the rule counts cash 1:1."""
        v = self.vault.functions
        try:
            if not v.settlement_priced().call(block_identifier=block):
                return {"settlement_price_id": -1}
            return {
                "settlement_price_id": v.settlement_price_id().call(block_identifier=block),
                "depeg_threshold": v.depeg_threshold().call(block_identifier=block),
                "depeg_factor": v.depeg_factor().call(block_identifier=block),
            }
        except (ContractLogicError, BadFunctionCallOutput):
            return {"settlement_price_id": -1}

    # ------------------------------------------------------------------ state

    def snapshot(self, accounts: Sequence[str], block: int) -> Snapshot:
        """Prices, markets and the raw state of `accounts`, all read at `block`."""
        inputs = self.block_inputs(block)
        states = self.account_states(accounts, block)
        return Snapshot(
            block=block,
            accounts=tuple(accounts),
            prices=inputs.prices,
            markets=inputs.markets,
            book=AccountBook.from_states(states, inputs.n_assets, inputs.markets.n_markets),
        )

    def block_inputs(self, block: int) -> BlockInputs:
        """What every account's valuation shares at `block`: index prices, the market table (block
        time included) and the vault's asset count. Four calls, whatever the number of accounts."""
        prices = np.array(self.oracle.functions.index_prices().call(block_identifier=block), dtype=object)
        markets = MarketTable.from_states(self.market_states(block), self.w3.eth.get_block(block)["timestamp"])
        n_assets = self.vault.functions.asset_count().call(block_identifier=block)
        return BlockInputs(block=block, prices=prices, markets=markets, n_assets=int(n_assets))

    def market_table(self, block: int) -> MarketTable:
        """Every market (MarginLens.market_states) at `block`, as the snapshot reads them: expiry
        0 for a perpetual, settlement price 0 while live."""
        return MarketTable.from_states(self.market_states(block), self.w3.eth.get_block(block)["timestamp"])

    def market_states(self, block: int | str = "latest") -> list[MarketState]:
        """Every market (MarginLens.market_states) at `block`, funding index accrued to its time."""
        return [MarketState.decode(m) for m in self.lens.functions.market_states().call(block_identifier=block)]

    def account_states(self, accounts: Sequence[str], block: int | str = "latest") -> list[AccountState]:
        """Cash, collateral balances and positions of each account (MarginLens.account_states) at `block`."""
        out: list[AccountState] = []
        for i in range(0, len(accounts), BATCH):
            chunk = self.lens.functions.account_states(list(accounts[i : i + BATCH])).call(block_identifier=block)
            out += [AccountState.decode(s) for s in chunk]
        return out

    def margin_summaries(self, accounts: Sequence[str], block: int | str = "latest") -> list[MarginSummary]:
        """The contract's (equity, IM, MM, health) for each account, read at `block`."""
        out: list[MarginSummary] = []
        for i in range(0, len(accounts), BATCH):
            chunk = self.lens.functions.margin_summaries(list(accounts[i : i + BATCH])).call(block_identifier=block)
            out += [MarginSummary.decode(s) for s in chunk]
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
        """Every log of the vault and the engine in [from_block, to_block], oldest first, from one
        eth_getLogs call (both addresses, no topic filter), decoded with their ABIs.

        `account` is the log's `account` argument (its first address argument when it has none);
        `touched` names every address argument: the accounts whose raw state (cash, collateral
        balances, positions: `account_states`) the log's transaction may have changed. Every such
        change on chain logs one of these events naming the account (`Deposit`, `Withdraw`,
        `CashSettled`, `CollateralTransferred`, `PositionChanged`, ...). A log the ABIs do not know
        (a contract upgraded under the keeper) is returned with event "unknown" and touched
        (`TOUCHES_ALL`,): a state cache re-reads every account rather than guess."""
        by_topic = self._log_decoders()
        raw = self.w3.eth.get_logs(
            {"fromBlock": from_block, "toBlock": to_block, "address": [self.vault.address, self.engine.address]}
        )
        out: list[ProtocolLog] = []
        for entry in raw:
            if entry.get("removed"):
                continue
            meta = dict(
                block=entry["blockNumber"],
                block_hash="0x" + bytes(entry["blockHash"]).hex(),
                tx_hash="0x" + bytes(entry["transactionHash"]).hex(),
            )
            decoder = by_topic.get(bytes(entry["topics"][0])) if entry["topics"] else None
            if decoder is not None and decoder.name not in DECODED_EVENTS and decoder.topic_positions is not None:
                # only the addresses are needed and they are all indexed: read them from the topics
                topics = entry["topics"]
                if len(topics) > max(decoder.topic_positions, default=0):
                    touched = tuple(Web3.to_checksum_address(bytes(topics[i])[-20:]) for i in decoder.topic_positions)
                    account = touched[decoder.names.index("account")] if "account" in decoder.names else ""
                    out.append(ProtocolLog(event=decoder.name, account=account, args={}, touched=touched, **meta))
                    continue
            try:
                decoded = decoder.event.process_log(entry) if decoder is not None else None
            except Exception:  # noqa: BLE001 - a log that does not decode is treated as unknown
                decoded = None
            if decoder is None or decoded is None:
                out.append(ProtocolLog(event="unknown", account="", args={}, touched=(TOUCHES_ALL,), **meta))
                continue
            args = dict(decoded["args"])
            touched = tuple(str(args[name]) for name in decoder.names)
            account = str(args.get("account", touched[0] if touched else ""))
            out.append(ProtocolLog(event=decoded["event"], account=account, args=args, touched=touched, **meta))
        out.sort(key=lambda p: p.block)
        return out

    def _log_decoders(self) -> dict[bytes, _LogDecoder]:
        """topic0 -> how to read each event of the vault and the engine (built once)."""
        if self._decoders is None:
            self._decoders = {}
            for contract in (self.vault, self.engine):
                for item in contract.abi:
                    if item.get("type") != "event" or item.get("anonymous"):
                        continue
                    inputs = item.get("inputs", [])
                    signature = f"{item['name']}({','.join(i['type'] for i in inputs)})"
                    addresses = [i for i in inputs if i["type"] == "address"]
                    indexed = [i["name"] for i in inputs if i.get("indexed")]
                    positions = (
                        tuple(1 + indexed.index(a["name"]) for a in addresses)
                        if all(a.get("indexed") for a in addresses)
                        else None
                    )
                    self._decoders[Web3.keccak(text=signature)] = _LogDecoder(
                        item["name"],
                        getattr(contract.events, item["name"])(),
                        tuple(a["name"] for a in addresses),
                        positions,
                    )
        return self._decoders

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

    # ------------------------------------------------------------------ options and attestations

    def _module(self, field: str, getter: str, name: str):
        """The portfolio module from the manifest, else as the engine has it wired (None if unset)."""
        address = getattr(self.deployment, field, "") or ""
        if not address:
            address = getattr(self.engine.functions, getter)().call()
        if not address or int(address, 16) == 0:
            return None
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)

    @functools.cached_property
    def options(self):
        """The OptionMarket contract (None when the engine has none wired)."""
        return self._module("option_market", "option_market", "OptionMarket")

    @functools.cached_property
    def backstop(self):
        """The BackstopVault contract of the manifest (`backstop_vault`), or None when the
        deployment has none."""
        address = getattr(self.deployment, "backstop_vault", "") or ""
        if not address or int(address, 16) == 0:
            return None
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact("BackstopVault").abi)

    @functools.cached_property
    def attestor(self):
        """The HealthAttestor contract (None when the engine has none wired)."""
        return self._module("health_attestor", "health_attestor", "HealthAttestor")

    @functools.cached_property
    def vol_feed(self):
        """The VolFeed the option market reads (None without an option market)."""
        if self.options is None:
            return None
        address = getattr(self.deployment, "vol_feed", "") or self.options.functions.VOL_FEED().call()
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact("VolFeed").abi)

    def option_series(self, block: int | str = "latest") -> list[SeriesInfo]:
        """Every listed series (OptionMarket.series_states) at `block`; [] without options."""
        if self.options is None:
            return []
        return [
            SeriesInfo(
                series_id=i,
                underlying=s.underlying,
                price_id=s.price_id,
                strike=s.strike,
                expiry=s.expiry,
                is_call=s.is_call,
                settlement_price=s.settlement_price,
            )
            for i, s in enumerate(self.series_states(block))
        ]

    def series_states(self, block: int | str = "latest") -> list[SeriesState]:
        """OptionMarket.series_states at `block` (marks, sigma, open interest); [] without options."""
        if self.options is None:
            return []
        return [SeriesState.decode(s) for s in self.options.functions.series_states().call(block_identifier=block)]

    def option_positions(self, accounts: Sequence[str], block: int | str = "latest") -> list[dict[int, int]]:
        """{series id: signed WAD size} of each account at `block` (OptionMarket.positions of the
        series it holds, via option_states); empty dicts without options."""
        if self.options is None:
            return [{} for _ in accounts]
        return [{s.series: s.size for s in states if s.size} for states in self.option_states(accounts, block)]

    def option_states(self, accounts: Sequence[str], block: int | str = "latest") -> list[list[OptionState]]:
        """Each account's option positions with their marks, values and standard margins
        (MarginLens.option_states_of) at `block`; empty lists without options."""
        if self.options is None:
            return [[] for _ in accounts]
        rows = self._batched("option_states_of", accounts, block, self._option_states_one)
        return [[OptionState.decode(s) for s in states] for states in rows]

    def _option_states_one(self, account: str, block: int | str) -> list:
        f = self.options.functions
        return (
            f.option_states(account).call(block_identifier=block)
            if f.has_positions(account).call(block_identifier=block)
            else []
        )

    def _batched(self, view: str, accounts: Sequence[str], block: int | str, one) -> list:
        """MarginLens.<view> over `accounts` in batches of BATCH, all at `block`. A lens deployed
        before the view existed reverts without data: then `one(account, block)` per account."""
        if block == "latest":  # every batch at the same block
            block = self.w3.eth.block_number
        if not self._lens_batches:
            return [one(a, block) for a in accounts]
        out: list = []
        for i in range(0, len(accounts), BATCH):
            chunk = list(accounts[i : i + BATCH])
            try:
                out += getattr(self.lens.functions, view)(chunk).call(block_identifier=block)
            except (ContractLogicError, BadFunctionCallOutput) as e:
                if getattr(e, "data", None) not in (None, "0x", b"") or (
                    getattr(e, "message", None) or ""
                ).strip() not in ("", "execution reverted"):
                    raise  # a reason: the module's own revert (e.g. "options: no valid price")
                log.warning(
                    "lens %s has no %s (an older MarginLens): reading account by account", self.lens.address, view
                )
                self._lens_batches = False
                return out + [one(a, block) for a in accounts[i:]]
        return out

    def option_margin(self, account: str, prices: Sequence[int], block: int | str = "latest") -> OptionMargin:
        """(value, IM, MM) WAD USD the option market adds to `account` at `prices` (standard margin)."""
        if self.options is None:
            return OptionMargin(0, 0, 0)
        call = self.options.functions.margin_contribution(account, list(prices))
        return OptionMargin.decode(call.call(block_identifier=block))

    def vol_points(self, series: Sequence[SeriesInfo], block: int | str = "latest") -> dict[tuple[int, int], VolPoint]:
        """The VolFeed entry of every (price id, expiry) of `series`, read at `block`."""
        if self.vol_feed is None:
            return {}
        out: dict[tuple[int, int], VolPoint] = {}
        for s in series:
            key = (s.price_id, s.expiry)
            if key not in out:
                atm, skew, stamp = self.vol_feed.functions.vol_params(*key).call(block_identifier=block)
                out[key] = VolPoint(atm, skew, stamp)
        return out

    def vol_heartbeat(self, block: int | str = "latest") -> int | None:
        return None if self.vol_feed is None else self.vol_feed.functions.heartbeat_now().call(block_identifier=block)

    def risk_book(self, snap: Snapshot, params: RiskParams, symbols: Sequence[str] = ()) -> RiskBook:
        """The scenario engine's book (keeper.risk.book) of the snapshot's accounts, options
        included, everything read at the snapshot's block."""
        block = snap.block
        series = self.option_series(block)
        names = {v: k for k, v in self.deployment.markets.items()}
        return build_book(
            snap.accounts, [int(p) for p in snap.prices], [int(x) for x in params.price_id],
            [int(x) for x in snap.markets.underlying], [int(x) for x in snap.markets.expiry],
            [int(x) for x in snap.markets.settlement_price], snap.book.size, series,
            self.option_positions(snap.accounts, block), self.vol_points(series, block),
            snap.markets.timestamp, symbols or self.underlying_symbols(), names, self.vol_heartbeat(block),
        )  # fmt: skip

    def underlying_symbols(self) -> tuple[str, ...]:
        """Labels of the engine underlyings from the manifest (U<id> where it has none)."""
        names = {v: k for k, v in self.deployment.underlyings.items()}
        n = self.engine.functions.underlying_count().call()
        return tuple(names.get(u, f"U{u}") for u in range(n))

    def position_versions(self, accounts: Sequence[str], block: int | str = "latest") -> list[int]:
        """MarginEngine.position_version of each account (what attestations bind to), read in
        batches of 200 (MarginLens.position_versions_of) at `block`."""
        one = lambda a, b: self.engine.functions.position_version(a).call(block_identifier=b)  # noqa: E731
        return [int(v) for v in self._batched("position_versions_of", accounts, block, one)]

    def stored_attestation(self, account: str, block: int | str = "latest") -> StoredAttestation | None:
        """The account's latest stored attestation (None if none or no attestor)."""
        if self.attestor is None:
            return None
        return _stored(self.attestor.functions.attestation(account).call(block_identifier=block))

    def stored_attestations(
        self, accounts: Sequence[str], block: int | str = "latest"
    ) -> list[StoredAttestation | None]:
        """Each account's latest stored attestation (None if none; all None without an
        attestor), read in batches of 200 (MarginLens.attestations_of) at `block`."""
        if self.attestor is None:
            return [None for _ in accounts]
        one = lambda a, b: self.attestor.functions.attestation(a).call(block_identifier=b)  # noqa: E731
        return [_stored(a) for a in self._batched("attestations_of", accounts, block, one)]

    def attestor_terms(self, block: int | str = "latest") -> AttestorTerms:
        """The attestor's floor, price band (WAD fractions), max validity (s) and signer threshold."""
        f = self.attestor.functions
        return AttestorTerms(
            margin_floor=f.margin_floor_now().call(block_identifier=block), price_band=f.price_band().call(block_identifier=block),
            max_validity=f.max_validity().call(block_identifier=block), threshold=f.threshold().call(block_identifier=block),
            signer_set_version=f.signer_set_version().call(block_identifier=block),
        )  # fmt: skip

    def portfolio_accounts_logs(self, from_block: int, to_block: int) -> set[str]:
        """Accounts named by OptionPositionChanged or AttestationSubmitted in [from_block, to_block]."""
        found: set[str] = set()
        for contract, event in ((self.options, "OptionPositionChanged"), (self.attestor, "AttestationSubmitted")):
            if contract is not None:
                for log in getattr(contract.events, event).get_logs(from_block=from_block, to_block=to_block):
                    found.add(log["args"]["account"])
        return found


def _stored(a) -> StoredAttestation | None:
    """HealthAttestor.attestation's tuple (fields in the ABI's order); None when nothing is
    stored (issued_at 0)."""
    version, prices, *rest = a
    stored = StoredAttestation(int(version), tuple(int(p) for p in prices), *(int(x) for x in rest))
    return None if stored.issued_at == 0 else stored


@dataclass(frozen=True)
class StoredAttestation:
    """HealthAttestor.attestation(account): WAD prices and margins, unix times."""

    position_version: int
    prices: tuple[int, ...]
    initial_margin: int
    maintenance_margin: int
    issued_at: int
    valid_until: int
    signer_set_version: int


@dataclass(frozen=True)
class AttestorTerms:
    """HealthAttestor parameters: margin_floor (in force, `margin_floor_now`) and price_band WAD
    fractions, max_validity seconds."""

    margin_floor: int
    price_band: int
    max_validity: int
    threshold: int
    signer_set_version: int


# `ProtocolLog.touched` of a log nobody can decode: every account may have changed
TOUCHES_ALL = "*"
# events whose arguments the keeper uses (the event index, the bot): decoded in full; of the
# others only the address arguments are read (from the topics when they are all indexed)
DECODED_EVENTS = frozenset({"Deposit", "PositionChanged", "Liquidation"})


@dataclass(frozen=True)
class _LogDecoder:
    """How to read one event: its name, web3 decoder, the names of its address arguments and,
    when they are all indexed, their topic positions (None otherwise)."""

    name: str
    event: Any
    names: tuple[str, ...]
    topic_positions: tuple[int, ...] | None


@dataclass(frozen=True)
class ProtocolLog:
    """One decoded log of the vault or the engine (`event`: Deposit, PositionChanged,
    Liquidation, CashSettled, ..., or "unknown"). `touched`: the addresses the log names, whose
    raw state it may have changed; empty means just `account` (`touches`)."""

    event: str
    account: str
    block: int
    block_hash: str
    tx_hash: str
    args: dict
    touched: tuple[str, ...] = ()

    @property
    def touches(self) -> tuple[str, ...]:
        """The accounts whose raw state this log's transaction may have changed."""
        return self.touched or ((self.account,) if self.account else ())


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
        if (
            flagged_at == 0
            or top == self.penalty
            or self.ramp_seconds == 0
            or now - flagged_at >= 2 * self.ramp_seconds
        ):
            return self.penalty
        elapsed = min(max(now - flagged_at, 0), self.ramp_seconds)
        return self.penalty + (top - self.penalty) * elapsed // self.ramp_seconds


def connect_any(urls: Sequence[str], timeout: float = 10.0) -> Web3:
    """A Web3 over FallbackProvider(urls) (see keeper.chain.rpc), checked like `connect`: raises
    ChainError with one line if no endpoint answers eth_chainId with a chain id."""
    from keeper.chain.rpc import SCHEMES, FallbackProvider

    if isinstance(urls, str) or not urls:
        raise ChainError(f"RPC URLs must be a non-empty list, got {urls!r}")
    for url in urls:
        if not isinstance(url, str) or not url.startswith(SCHEMES):
            raise ChainError(f"RPC URL must start with http://, https://, ws:// or wss://: {url!r}")
    w3 = Web3(FallbackProvider(urls, timeout=timeout, max_attempts=len(urls), backoff_initial=0.05, backoff_max=0.5))
    try:
        chain_id = w3.eth.chain_id
    except RPC_ERRORS as e:
        raise ChainError(rpc_failure(", ".join(urls), e)) from None
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id < 0:
        raise ChainError(f"RPC at {', '.join(urls)} answered eth_chainId with {chain_id!r}, not a chain id")
    w3.provider.max_attempts = max(3, 2 * len(urls))  # connected: ride out short outages
    return w3
