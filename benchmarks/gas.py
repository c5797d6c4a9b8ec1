"""Gas per protocol operation, as a user pays it, on this tree and on a baseline revision.

    python -m benchmarks.gas [--json] [--baseline REV] [--profile NAME]

Each scenario runs on titanoboa (in-process EVM, every transaction in its own block as
tests/boa_protocol.py arranges) against the default deployment: config/local.yaml deployed by
`keeper.chain.deploy.deploy_protocol` (through `BoaProtocol.deploy`), with an option market from
`OptionsKit` where a scenario needs one (here, deploy_protocol's option steps with
tests/config/option_tests.yaml's `options:` section, no attestor wired). The same scenario code runs twice in one invocation:
here, on the working tree, and in a subprocess on a temporary detached worktree of the baseline
revision (default 6771a1a, the design before the core2 redesign; removed afterwards), whose own
keeper/ and tests/boa_protocol.py are imported. `Adapter` holds the only API difference the
scenarios see: orders go through `Matching.match_orders` here and `MarginEngine.match_orders`
at the baseline (each revision's `OptionsKit.deploy` wires its own option market, with or
without an `OptionLiquidation`).

What a figure is
----------------
The execution gas of the transaction, as the contract-core issue states its targets: the gas its
computation uses (child calls included), without the transaction's 21,000 base and calldata and
before refunds. Each transaction's receipt gas (`gasUsed`) is printed and reported beside it.
titanoboa runs a call as a bare message (no transaction), so the transaction-level rules are
applied here, as py-evm's transaction executor applies them:
  - before the transaction, `state.lock_changes()` ends the previous one: what earlier
    transactions wrote becomes the slots' original values (EIP-2200 / EIP-3529 SSTORE pricing;
    without it titanoboa prices a write to any slot written earlier in the session as a
    rewrite of a dirty slot, 100 gas instead of 2,900) and every address and slot is cold again
    (EIP-2929), except the sender and the called contract, which a transaction warms;
  - gas = intrinsic + execution - refund, where intrinsic = 21,000 + 4 per zero and 16 per
    non-zero calldata byte (EIP-2028; no access list, no contract creation), execution is the
    computation's gas used (child calls included), and refund = min(refunds, gas / 5)
    (EIP-3529). The calldata is the exact ABI encoding the call sent.
Cross-check (benchmarks/gas_anvil_check.py: the same deposit, first trade and withdrawal on
Anvil and here): deposit and withdrawal equal to the gas of Anvil's receipts; the trade 14 gas
apart, 12 of them calldata (the signatures differ between the chains). Without
`lock_changes` the same deposit measures 40,043 instead of 62,053.
`margin_check_16_options` is different: the execution gas of one `MarginEngine.margin_summary`
call (cold storage, no transaction base, no calldata), as benchmarks/option_margin_gas.py
measures it, because that is a view every margin check runs, not a transaction.

Scenarios
---------
The protocol is warm: before any measured transaction, prices are published, the insurance fund
holds config/local.yaml's backstop (1,000,000 USDC), two market makers have traded every listed
market (open interest, funding state and the counterparty's positions exist) and the liquidator
holds cash. Each measured account was set up in earlier transactions
(in earlier blocks), as in reality; 12 s pass before each measured transaction.
  - match_orders: a relayer submits two signed orders (maker buys 1 ETH-PERP from the taker at
    the index): both signatures, both margin checks, the caps, between two accounts that each
    traded 1 ETH-PERP with a market maker in an earlier block (nonce word, position slots and
    market list exist, cold in this transaction): the case of the contract-core issue's
    target, whose "today" figure it reproduces on the baseline.
  - match_orders_first_trade: the same trade between two accounts holding only cash (10,000
    USDC) that open their first position: what a new trader pays on top (first nonce word,
    position slots and market list entry of each account, about 22k each; no target).
  - liquidate: `MarginEngine.liquidate` of an account long 20 ETH-PERP and 1.5 BTC-PERP on
    10,000 USDC after ETH and BTC fall 8%: a partial liquidation (health back to the target)
    by the one liquidator of the issue's target, which liquidated a like account earlier
    (prices restored in between) and so already holds both markets.
  - liquidate_first: the same by a liquidator holding only cash, so it takes over its first
    positions in both markets (no target).
  - withdraw_usdc: 1,000 USDC withdrawn (initial-margin check) from an account with 10,000 USDC
    and 1 ETH-PERP long; its wallet already holds some USDC.
  - deposit_usdc: 1,000 USDC deposited into an account that already holds 1,000 USDC of cash;
    the approval (of exactly the amount) was an earlier transaction, and the wallet keeps some.
  - margin_check_16_options: `MarginEngine.margin_summary` of an account short 16 ETH option
    series (calls and puts, strikes 1,800-2,200, 30 and 60 days, fresh vols) and nothing else.
  - max_liquidation_call: an account holding the most an account can: positions in
    MAX_ACCOUNT_MARKETS = 8 markets (the admin lists four more futures), MAX_ACCOUNT_SERIES = 32
    option series (ETH and BTC, calls and puts, two expiries) and every listed collateral asset
    (USDC cash, WETH, WBTC): long every future (5 ETH or 1/3 BTC each), short every series (1
    ETH or 0.05 BTC each), 12,000 USDC, 2 WETH, 0.1 WBTC. Twice, on fresh deployments, ETH and
    BTC fall: by 15% (liquidatable, solvent: partial liquidation) and by 25% (in debt: options
    moved, every position closed, collateral sold, the deficit covered). A liquidator holding
    only cash liquidates it as the keeper does (keeper/bot.py: `OptionMarket.liquidate_options`
    while the account holds options and that succeeds, else `MarginEngine.liquidate`), fresh
    vols published before each call, until the account is no longer liquidatable. The figure
    is the largest call of both; the second table lists each call.

  - liquidate_routed: the `liquidate` account and fall through `BackstopVault.liquidate`, called
    by a keeper with nothing deposited: the vault (config/local.yaml's `backstop_vault:`, seeded with
    1,000,000 USDC through request_deposit, a day, claim_deposit) takes the positions, having
    liquidated a like account earlier (it already holds the market), and pays the keeper its
    fee. Not on the baseline (no vault there).
  - unwind: one `BackstopVault.unwind` half an auction after a routed liquidation: a taker with
    cash buys half of the long the vault took over at the auction price (a signed order,
    matched against the vault's own order). Not on the baseline.
  - buy_collateral: one `BackstopVault.buy_collateral` half an auction after a routed
    liquidation that sold the vault a bankrupt account's WETH (long 10 ETH-PERP on 0.75 ETH of
    cash and 1 WETH, after a 15% fall): a buyer pays USDC for half of it at the auction price.
    Not on the baseline.
  - deleverage: one auto-deleveraging step, `MarginEngine.deleverage`: an account long 20
    ETH-PERP on $10,000 (10 from each of two shorts, on $1,000,000 and $50,000), bankrupt after
    a 40% fall with an empty insurance fund and no backstop vault deposit, closed against both
    shorts (the more leveraged first), nominated in its round and after the round's notice.
    Not on the baseline.
  - nominate: the `MarginEngine.nominate` that opens that round with both shorts. Not on the
    baseline.

The tokens and price feeds are config/local.yaml's mocks (MockERC20, MockAggregator): mainnet
USDC (a proxy with a blacklist) and Chainlink feeds (proxy, then aggregator) cost a few thousand
gas more per transfer and per feed read.

Output: a table (baseline, current, change, target), the calls of max_liquidation_call, and the
parts of each current figure; with --json one JSON object on the last line (the figures, the
same under "baseline", "baseline_rev", "targets", and "max_liquidation_calls": [label, gas] of
each call on both revisions), also written to reports/gas.json (the README's figures come from
there). `--profile NAME` prints titanoboa's gas profile of scenario NAME's measured
transaction(s) on this tree: the call tree (gas with and without child calls), then functions
and source lines by their own gas (boa.profiling's line profile); no baseline, no report.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the tree this file belongs to
DEFAULT_BASELINE = "6771a1a"
REPORT = ROOT / "reports" / "gas.json"

SCENARIOS = (
    "match_orders",
    "match_orders_first_trade",
    "liquidate",
    "liquidate_first",
    "withdraw_usdc",
    "deposit_usdc",
    "margin_check_16_options",
    "max_liquidation_call",
)
# scenarios of contracts the baseline does not have (BackstopVault): measured on this tree only
CURRENT_ONLY = ("liquidate_routed", "unwind", "buy_collateral", "deleverage", "nominate")
ALL_SCENARIOS = SCENARIOS + CURRENT_ONLY
# the contract-core issue's targets, on execution gas; the first-time variants have none
TARGETS = {
    "match_orders": 250_000,
    "match_orders_first_trade": None,
    "liquidate": 250_000,
    "liquidate_first": None,
    "withdraw_usdc": 150_000,
    "deposit_usdc": None,
    "margin_check_16_options": 420_000,
    "max_liquidation_call": 3_000_000,
    "liquidate_routed": None,
    "unwind": None,
    "buy_collateral": None,
    "deleverage": None,
    "nominate": None,
}
# scenarios that need an empty insurance fund (every other one runs with the config's fund)
NO_FUND = ("deleverage", "nominate")

WAD = 10**18
DAY = 86400
BLOCK_TIME = 12
START_TIME = 1_800_000_000  # each deployment starts at this block timestamp


# ---------------------------------------------------------------- measurement


@dataclass
class Tx:
    """One measured transaction: `gas` is what its receipt's gasUsed would say."""

    label: str
    gas: int
    intrinsic: int
    execution: int
    refund: int


def intrinsic_gas(calldata: bytes) -> int:
    """21,000 plus calldata (EIP-2028: 4 per zero byte, 16 per non-zero byte)."""
    return 21_000 + sum(16 if b else 4 for b in calldata)


class Meter:
    """Sends measured transactions; with `profile`, records titanoboa's gas profile of each."""

    def __init__(self, profile: bool = False):
        self.profile = profile
        self.txs: list[Tx] = []
        self.trees: list[tuple[str, list]] = []  # with `profile`: (label, call_tree) per transaction

    def send(self, label: str, contract, fn: str, *args, sender: str) -> Tx:
        import boa
        from eth_utils import to_canonical_address

        state = boa.env.evm.vm.state
        state.lock_changes()  # end of the previous transaction (see the module docstring)
        state.mark_address_warm(to_canonical_address(str(sender)))
        state.mark_address_warm(to_canonical_address(str(contract.address)))
        if self.profile:
            boa.env.enable_gas_profiling()
        try:
            with boa.env.prank(sender):
                getattr(contract, fn)(*args)
        finally:
            if self.profile:
                boa.env.reset_gas_metering_behavior()
        computation = contract._computation
        intrinsic = intrinsic_gas(bytes(computation.msg.data))
        execution = computation.get_gas_used()
        refund = min(computation.get_gas_refund(), (intrinsic + execution) // 5)
        tx = Tx(label, intrinsic + execution - refund, intrinsic, execution, refund)
        self.txs.append(tx)
        if self.profile:
            self.trees.append((label, call_tree(computation)))
        return tx

    def view(self, label: str, contract, fn: str, *args) -> Tx:
        """Execution gas of one call from cold storage (no transaction base, no calldata)."""
        import boa

        boa.env.evm.reset_access_counters()
        if self.profile:
            boa.env.enable_gas_profiling()
        try:
            getattr(contract, fn)(*args)
        finally:
            if self.profile:
                boa.env.reset_gas_metering_behavior()
        execution = contract._computation.get_gas_used()
        tx = Tx(label, execution, 0, execution, 0)
        self.txs.append(tx)
        if self.profile:
            self.trees.append((label, call_tree(contract._computation)))
        return tx


def call_tree(computation, depth: int = 0) -> list[tuple[int, str, int, int]]:
    """(depth, contract.function, gas including child calls, own gas) of a computation and its
    child calls, depth first."""
    import boa

    contract = boa.env.lookup_contract(computation.msg.code_address)
    if contract is None:
        name = "0x" + bytes(computation.msg.code_address).hex()
        name = f"precompile {name[-2:]}" if int(name, 16) < 0x100 else name
    else:
        fn = None
        try:
            fn = contract._get_fn_from_computation(computation)
        except Exception:  # noqa: BLE001 - a name is a convenience
            pass
        if fn is None:  # e.g. a public getter, which has no function in the source
            from eth_utils import function_abi_to_4byte_selector

            selector = bytes(computation.msg.data[:4])
            fn_name = next(
                (
                    f["name"]
                    for f in contract.abi
                    if f.get("type") == "function" and function_abi_to_4byte_selector(f) == selector
                ),
                "0x" + selector.hex(),
            )
        else:
            fn_name = fn.name
        name = f"{Path(contract.compiler_data.contract_path).stem}.{fn_name}"
    if computation.msg.storage_address != computation.msg.code_address:
        name += " (delegatecall)"
    total = computation.get_gas_used()
    rows = [(depth, name, total, total - sum(child.get_gas_used() for child in computation.children))]
    for child in computation.children:
        rows += call_tree(child, depth + 1)
    return rows


# ---------------------------------------------------------------- the revision's API


@dataclass(frozen=True)
class Adapter:
    """The API differences between revisions that the scenarios see."""

    name: str
    order_entry: str  # attribute of BoaProtocol whose `match_orders` takes signed perpetual orders
    order_label: str

    def match_orders(self, p):
        return getattr(p, self.order_entry), "match_orders"


MATCHING = Adapter("orders via Matching", "matching", "Matching.match_orders")  # core2 and later
ENGINE = Adapter("orders via MarginEngine", "engine", "MarginEngine.match_orders")  # 6771a1a and before


def detect_adapter(tree: Path) -> Adapter:
    return MATCHING if (tree / "contracts" / "Matching.vy").exists() else ENGINE


# ---------------------------------------------------------------- scenarios


class Bench:
    """A fresh default deployment, warmed up (see the module docstring)."""

    def __init__(self, tree: Path, adapter: Adapter, meter: Meter, seed: str, fund: bool = True):
        import boa

        from keeper.config import load_config
        from tests.boa_protocol import BoaProtocol

        self.boa = boa
        self.adapter = adapter
        self.meter = meter
        # reproducible figures: the same clock, deployer (hence contract addresses) and accounts
        # for a scenario on every run and revision, whichever scenarios ran before (calldata and
        # stored values, hence gas, depend on addresses, signatures and deadlines)
        boa.env.evm.patch.timestamp = START_TIME
        boa.env.set_random_seed(f"benchmarks.gas {seed}")
        self.p = p = BoaProtocol.deploy(load_config(tree / "config" / "local.yaml"))
        users = itertools.count(1)
        p.new_user = lambda: self._user(next(users))
        self.relayer = boa.env.generate_address("relayer")
        self.makers = [p.new_user(), p.new_user()]
        for u in self.makers:
            p.deposit_usd(u, 5_000_000)
        for market, size in (("ETH-PERP", 10), ("ETH-FUT", 10), ("BTC-PERP", 1), ("BTC-FUT", 1)):
            p.trade(self.makers[0], self.makers[1], market, size * WAD, self.price(market))
        for symbol in ("ETH", "BTC", "USDC"):
            p.set_price(symbol, self.usd(symbol))
        # the insurance fund the caps are sized against (config backstop), as `keeper replay` funds it
        if fund:
            units = (getattr(p.config, "insurance_fund_usd", 0) or 1_000_000) * 10**p.config.settlement_decimals
            p.usdc.mint(p.admin, units)
            with boa.env.prank(p.admin):
                p.usdc.approve(p.vault.address, units)
                p.vault.fund_insurance(units)
        self.liquidator = p.new_user()
        p.deposit_usd(self.liquidator, 2_000_000)
        self.tick()

    def _user(self, n: int):
        from eth_account import Account
        from eth_utils import keccak

        from tests.boa_protocol import User

        account = Account.from_key(keccak(text=f"benchmarks.gas user {n}"))
        user = User(account.address, bytes(account.key))
        self.p.users.append(user)
        return user

    def tick(self, seconds: int = BLOCK_TIME) -> None:
        self.boa.env.time_travel(seconds=seconds)

    def usd(self, symbol: str) -> float:
        feed = self.p.feeds[symbol]
        return feed.latestRoundData()[1] / 10 ** self.p.deployment.feed_decimals[symbol]

    def price(self, market: str | int) -> int:
        """The index price (WAD) of a market's underlying."""
        p = self.p
        market_id = p.deployment.markets[market] if isinstance(market, str) else market
        underlying = p.engine.markets(market_id)[0]
        price_id = p.engine.underlyings(underlying)[0]
        return p.oracle.index_prices()[price_id]

    def funded(self, usd: int):
        user = self.p.new_user()
        self.p.deposit_usd(user, usd)
        return user

    def liquidatable(self, account) -> bool:
        summary = self.p.engine.margin_summary(account.address)
        return summary[0] < summary[2]


def scenario_deposit_usdc(b: Bench) -> list[Tx]:
    p = b.p
    user = b.funded(1_000)
    amount = 1_000 * 10**6
    p.usdc.mint(user.address, 2 * amount)
    with b.boa.env.prank(user.address):
        p.usdc.approve(p.vault.address, amount)
    b.tick()
    return [b.meter.send("CollateralVault.deposit", p.vault, "deposit", p.usdc.address, amount, sender=user.address)]


def scenario_withdraw_usdc(b: Bench) -> list[Tx]:
    p = b.p
    user = b.funded(10_000)
    p.usdc.mint(user.address, 100 * 10**6)
    p.trade(user, b.makers[0], "ETH-PERP", WAD, b.price("ETH-PERP"))
    b.tick()
    return [
        b.meter.send(
            "CollateralVault.withdraw", p.vault, "withdraw", p.usdc.address, 1_000 * 10**6, sender=user.address
        )
    ]


def _match_one_eth(b: Bench, buyer, seller) -> list[Tx]:
    """The measured transaction of both match scenarios: `buyer` buys 1 ETH-PERP from `seller`
    at the index, through the relayer."""
    p = b.p
    price = b.price("ETH-PERP")
    maker, maker_sig = p.order(buyer, "ETH-PERP", WAD, price)
    taker, taker_sig = p.order(seller, "ETH-PERP", -WAD, price)
    contract, fn = b.adapter.match_orders(p)
    return [b.meter.send(b.adapter.order_label, contract, fn, maker, maker_sig, taker, taker_sig, sender=b.relayer)]


def scenario_match_orders_first_trade(b: Bench) -> list[Tx]:
    buyer, seller = b.funded(10_000), b.funded(10_000)
    b.tick()
    return _match_one_eth(b, buyer, seller)


def scenario_match_orders(b: Bench) -> list[Tx]:
    p = b.p
    buyer, seller = b.funded(10_000), b.funded(10_000)
    price = b.price("ETH-PERP")
    p.trade(buyer, b.makers[0], "ETH-PERP", WAD, price)
    p.trade(b.makers[1], seller, "ETH-PERP", WAD, price)
    b.tick()
    return _match_one_eth(b, buyer, seller)


def scenario_liquidate(b: Bench) -> list[Tx]:
    p = b.p
    scenario_liquidate_first(b, measure=False)
    for symbol in ("ETH", "BTC"):
        p.set_price(symbol, b.usd(symbol) / 0.92)
    b.tick()
    return scenario_liquidate_first(b)


def _two_market_victim(b: Bench, scenario: str):
    """An account long ETH-PERP and BTC-PERP on $10,000, made liquidatable by an 8% fall."""
    p = b.p
    victim = b.funded(10_000)
    p.trade(victim, b.makers[0], "ETH-PERP", 20 * WAD, b.price("ETH-PERP"))
    p.trade(victim, b.makers[0], "BTC-PERP", 3 * WAD // 2, b.price("BTC-PERP"))
    b.tick()
    for symbol in ("ETH", "BTC"):
        p.set_price(symbol, b.usd(symbol) * 0.92)
    assert b.liquidatable(victim), f"{scenario}: the account should be liquidatable"
    b.tick()
    return victim


def scenario_liquidate_first(b: Bench, measure: bool = True) -> list[Tx]:
    p = b.p
    victim = _two_market_victim(b, "liquidate")
    if not measure:
        with b.boa.env.prank(b.liquidator.address):
            p.engine.liquidate(victim.address)
        return []
    tx = b.meter.send("MarginEngine.liquidate", p.engine, "liquidate", victim.address, sender=b.liquidator.address)
    assert len(p.engine.open_markets(victim.address)) == 2, "liquidate: expected a partial liquidation"
    return [tx]


def _seed_backstop(b: Bench, usd: int = 1_000_000) -> None:
    """Deposit `usd` in the backstop vault as a depositor does: request, a day, claim (the
    feeds re-posted so that nothing is stale)."""
    from tests.boa_protocol import republish

    p = b.p
    lp = p.new_user()
    units = usd * 10**p.config.settlement_decimals
    p.usdc.mint(lp.address, units)
    with b.boa.env.prank(lp.address):
        p.usdc.approve(p.backstop.address, units)
        p.backstop.request_deposit(units)
    b.tick(p.backstop.request_delay() + 1)
    for feed in p.feeds.values():
        republish(feed.address)
    with b.boa.env.prank(lp.address):
        p.backstop.claim_deposit(lp.address)
    b.tick()


def _routed(b: Bench, measure: bool = True) -> list[Tx]:
    """The `liquidate_first` account and fall, liquidated through the backstop vault by a keeper
    with nothing deposited (the vault pays its fee to its wallet)."""
    p = b.p
    victim = _two_market_victim(b, "liquidate_routed")
    keeper = p.new_user()  # nothing deposited: it takes no position
    if not measure:
        with b.boa.env.prank(keeper.address):
            p.backstop.liquidate(victim.address)
        return []
    tx = b.meter.send("BackstopVault.liquidate", p.backstop, "liquidate", victim.address, sender=keeper.address)
    assert len(p.engine.open_markets(victim.address)) == 2, "liquidate_routed: expected a partial liquidation"
    assert p.usdc.balanceOf(keeper.address) > 0, "liquidate_routed: the keeper should be paid a fee"
    return [tx]


def scenario_liquidate_routed(b: Bench) -> list[Tx]:
    p = b.p
    _seed_backstop(b)
    _routed(b, measure=False)
    for symbol in ("ETH", "BTC"):
        p.set_price(symbol, b.usd(symbol) / 0.92)
    b.tick()
    return _routed(b)


def scenario_unwind(b: Bench) -> list[Tx]:
    p = b.p
    _seed_backstop(b)
    _routed(b, measure=False)
    market = p.engine.open_markets(p.backstop.address)[0]  # the partial liquidation's market
    b.tick(p.backstop.auction_time() // 2)
    for symbol in ("ETH", "BTC", "USDC"):
        p.set_price(symbol, b.usd(symbol))
    b.tick()
    inventory = p.engine.positions(p.backstop.address, market).size
    assert inventory > 0, "unwind: the vault should hold the long it took over"
    half = inventory // 2
    price, discount, _ = p.backstop.unwind_price(market, half)
    assert discount > 0, "unwind: half an auction in, the price should be below the index"
    taker = b.funded(1_000_000)
    order, signature = p.order(taker, market, half, price)
    tx = b.meter.send("BackstopVault.unwind", p.backstop, "unwind", order, signature, sender=taker.address)
    assert p.engine.positions(taker.address, market).size == half, "unwind: the taker should hold what it bought"
    return [tx]


def scenario_buy_collateral(b: Bench) -> list[Tx]:
    p = b.p
    _seed_backstop(b)
    weth = p.deployment.asset_ids["WETH"]
    victim = b.funded(int(b.usd("ETH") * 0.75))
    p.deposit(victim, "WETH", WAD)
    p.trade(victim, b.makers[0], "ETH-PERP", 10 * WAD, b.price("ETH-PERP"))
    b.tick()
    p.set_price("ETH", b.usd("ETH") * 0.85)
    b.tick()
    with b.boa.env.prank(p.new_user().address):
        p.backstop.liquidate(victim.address)
    held = p.vault.collateral_balances(p.backstop.address)[weth]
    assert held > 0, "buy_collateral: the routed liquidation should sell the vault the account's WETH"
    b.tick(p.backstop.auction_time() // 2)
    for symbol in ("ETH", "BTC", "USDC"):
        p.set_price(symbol, b.usd(symbol))
    b.tick()
    price = p.backstop.collateral_price(weth)
    assert price < b.price("ETH-PERP"), "buy_collateral: half an auction in, the price should be below the index"
    buyer = p.new_user()
    units = 10**12
    p.usdc.mint(buyer.address, units)
    with b.boa.env.prank(buyer.address):
        p.usdc.approve(p.backstop.address, units)
    tx = b.meter.send(
        "BackstopVault.buy_collateral", p.backstop, "buy_collateral", weth, held // 2, price, sender=buyer.address
    )
    assert p.token("WETH").balanceOf(buyer.address) == held // 2, "buy_collateral: the buyer should hold its WETH"
    return [tx]


def _bankrupt_long(b: Bench):
    """An account long 20 ETH-PERP on $10,000 against two shorts ($1,000,000 and $50,000 of
    cash), bankrupt after a 40% fall. Returns (account, deep short, thin short, market id)."""
    p = b.p
    victim = b.funded(10_000)
    deep, thin = b.funded(1_000_000), b.funded(50_000)
    for short in (deep, thin):
        p.trade(victim, short, "ETH-PERP", 10 * WAD, b.price("ETH-PERP"))
    b.tick()
    p.set_price("ETH", b.usd("ETH") * 0.6)
    b.tick()
    assert p.engine.margin_summary(victim.address)[0] < 0, "the account should be bankrupt"
    return victim, deep, thin, p.deployment.markets["ETH-PERP"]


def scenario_nominate(b: Bench) -> list[Tx]:
    victim, deep, thin, market = _bankrupt_long(b)
    tx = b.meter.send(
        "MarginEngine.nominate", b.p.engine, "nominate", victim.address, market, [deep.address, thin.address],
        sender=b.liquidator.address,
    )  # fmt: skip
    return [tx]


def scenario_deleverage(b: Bench) -> list[Tx]:
    from keeper.risk.adl import NOTICE

    p = b.p
    victim, deep, thin, market = _bankrupt_long(b)
    with b.boa.env.prank(b.liquidator.address):
        p.engine.nominate(victim.address, market, [deep.address, thin.address])
    b.tick(NOTICE)
    tx = b.meter.send(
        "MarginEngine.deleverage", p.engine, "deleverage", victim.address, market, sender=b.liquidator.address
    )
    assert p.engine.open_markets(victim.address) == [], "deleverage: both shorts should take the whole long"
    return [tx]


def _vols(b: Bench, kit, price_ids, expiries) -> None:
    for price_id in price_ids:
        for expiry in expiries:
            kit.set_vol(price_id, expiry, 8 * WAD // 10, -WAD // 5)


def scenario_margin_check_16_options(b: Bench) -> list[Tx]:
    from tests.boa_protocol import OptionsKit

    p = b.p
    kit = OptionsKit.deploy(p)
    now = b.boa.env.evm.patch.timestamp
    expiries = (now + 30 * DAY, now + 60 * DAY)
    _vols(b, kit, (0,), expiries)
    series = [
        kit.list(0, strike * WAD, expiry, is_call)
        for expiry in expiries
        for is_call in (True, False)
        for strike in (1800, 1900, 2100, 2200)
    ]
    seller, buyer = b.funded(1_000_000), b.funded(1_000_000)
    states = kit.market.series_states()
    for s in series:
        kit.trade(buyer, seller, s, WAD, states[s].mark)
    b.tick()
    _vols(b, kit, (0,), expiries)
    return [b.meter.view("MarginEngine.margin_summary", p.engine, "margin_summary", seller.address)]


# the maximal account's cash (USD): with it, 2 WETH and 0.1 WBTC it meets initial margin with
# little to spare; a fall of 15% makes it liquidatable but solvent, one of 25% leaves it in debt
MAX_ACCOUNT_CASH = 12_000
MAX_ACCOUNT_FALLS = (0.15, 0.25)


def scenario_max_liquidation_call(b: Bench, fall: float) -> list[Tx]:
    from tests.boa_protocol import OptionsKit

    p, boa = b.p, b.boa
    kit = OptionsKit.deploy(p)
    now = boa.env.evm.patch.timestamp
    expiries = (now + 30 * DAY, now + 60 * DAY)
    # four more futures, with the caps config/local.yaml gives the listed ones
    markets = list(p.deployment.markets.values())
    with boa.env.prank(p.admin):
        for symbol, underlying in (("ETH", 0), ("BTC", 1)):
            caps = (
                p.engine.max_open_interest(p.deployment.markets[f"{symbol}-FUT"]),
                p.engine.max_position(p.deployment.markets[f"{symbol}-FUT"]),
            )
            for expiry in expiries:
                market = p.engine.list_market(underlying, expiry)
                p.engine.set_position_caps(market, *caps)
                markets.append(market)
    assert len(markets) == 8
    _vols(b, kit, (0, 1), expiries)
    series = []
    for underlying, strikes in ((0, (1800, 1900, 2100, 2200)), (1, (27000, 28500, 31500, 33000))):
        for expiry in expiries:
            for is_call in (True, False):
                series += [kit.list(underlying, strike * WAD, expiry, is_call) for strike in strikes]
    assert len(series) == 32

    account = b.funded(MAX_ACCOUNT_CASH)
    p.deposit(account, "WETH", 2 * WAD)
    p.deposit(account, "WBTC", 10**7)  # 0.1 WBTC
    for market in markets:
        underlying = p.engine.markets(market)[0]
        p.trade(account, b.makers[0], market, 5 * WAD if underlying == 0 else WAD // 3, b.price(market))
    buyer = b.funded(1_000_000)
    states = kit.market.series_states()
    for s in series:
        kit.trade(buyer, account, s, WAD if states[s].underlying == 0 else WAD // 20, states[s].mark)
    assert len(p.engine.open_markets(account.address)) == 8
    assert len(kit.market.option_states(account.address)) == 32
    b.tick()
    for symbol in ("ETH", "BTC"):
        p.set_price(symbol, b.usd(symbol) * (1 - fall))
    assert b.liquidatable(account), "max liquidation: the account should be liquidatable"

    txs = []
    for _ in range(10):
        if not b.liquidatable(account):
            break
        b.tick()
        _vols(b, kit, (0, 1), expiries)
        b.tick()
        tx = None
        if kit.market.has_positions(account.address):
            try:
                tx = b.meter.send(
                    "OptionMarket.liquidate_options",
                    kit.market,
                    "liquidate_options",
                    account.address,
                    sender=b.liquidator.address,
                )
            except boa.BoaError:
                pass  # nothing left to move there: the engine's liquidation handles the rest
        if tx is None:
            tx = b.meter.send(
                "MarginEngine.liquidate", p.engine, "liquidate", account.address, sender=b.liquidator.address
            )
        txs.append(tx)
    assert txs and not b.liquidatable(account), "max liquidation: the account is still liquidatable"
    return txs


# scenario -> [(variant label, function of a fresh Bench)]; the figure is the largest call of all
SCENARIO_RUNS = {name: [("", globals()[f"scenario_{name}"])] for name in ALL_SCENARIOS}
SCENARIO_RUNS["max_liquidation_call"] = [
    (f"-{fall:.0%}", functools.partial(scenario_max_liquidation_call, fall=fall)) for fall in MAX_ACCOUNT_FALLS
]


def run_scenarios(tree: Path, names=SCENARIOS, profile: bool = False) -> dict:
    """{"adapter": ..., "scenarios": {scenario: [Tx as dict, ...]}} on the tree whose keeper/ and
    tests/ are importable; with `profile`, also "trees": [(label, call tree), ...]."""
    adapter = detect_adapter(tree)
    out, trees = {}, []
    for name in names:
        out[name] = []
        for variant, run in SCENARIO_RUNS[name]:
            meter = Meter(profile=profile)
            for tx in run(Bench(tree, adapter, meter, seed=f"{name} {variant}", fund=name not in NO_FUND)):
                tx.label = f"{variant} {tx.label}".strip()
                out[name].append(asdict(tx))
            trees += [(f"{variant} {label}".strip(), rows) for label, rows in meter.trees]
    result = {"adapter": adapter.name, "scenarios": out}
    if profile:
        result["trees"] = trees
    return result


def figure(txs: list[dict], key: str = "execution") -> int:
    """A scenario's figure: the largest execution gas of its transactions (or, with key="gas",
    the largest receipt gas)."""
    return max(tx[key] for tx in txs)


# ---------------------------------------------------------------- baseline worktree


def resolve(rev: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class BaselineRun:
    """The scenarios on a temporary detached worktree of `rev`, in a subprocess started at once
    (it runs while this process measures the current tree); `result()` waits and cleans up.
    The worktree's path depends only on the commit, so titanoboa's compile cache (keyed by
    file path) serves the next run."""

    def __init__(self, rev: str):
        self.rev = rev
        self.sha = resolve(rev)
        self.tree = Path(tempfile.gettempdir()) / f"crossmargin-gas-baseline-{self.sha[:12]}"
        self._remove()
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(self.tree), self.sha],
            check=True,
            capture_output=True,
            text=True,
        )
        venv = ROOT / ".venv"
        if venv.exists():
            (self.tree / ".venv").symlink_to(venv.resolve())
        env = dict(os.environ, PYTHONPATH=str(self.tree))
        self.proc = subprocess.Popen(
            # -P: the script's folder is not put first on sys.path, where benchmarks/keeper.py
            # would shadow the baseline tree's keeper package (PYTHONPATH)
            [sys.executable, "-P", str(Path(__file__).resolve()), "--worker"],
            cwd=self.tree,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _remove(self) -> None:
        if self.tree.exists():
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.tree)],
                capture_output=True,
                text=True,
            )
            shutil.rmtree(self.tree, ignore_errors=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True, text=True)

    def result(self) -> dict:
        try:
            stdout, stderr = self.proc.communicate()
            if self.proc.returncode != 0:
                raise SystemExit(f"baseline {self.rev} failed:\n{stderr[-4000:]}")
            return json.loads(stdout.strip().splitlines()[-1])
        finally:
            self._remove()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._remove()


# ---------------------------------------------------------------- output


def change(base: int | None, now: int) -> str:
    if not base:
        return "-"
    return f"{100 * (now - base) / base:+.1f}%"


def print_table(console, current: dict, baseline: dict, rev: str) -> None:
    from rich.table import Table

    table = Table(title=f"Gas per operation (titanoboa; execution gas) - baseline {rev}")
    for col in ("scenario", "baseline", "current", "change", "target", "meets", "receipt gas now"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for name in [n for n in ALL_SCENARIOS if n in current["scenarios"]]:
        now = figure(current["scenarios"][name])
        base = figure(baseline["scenarios"][name]) if baseline and name in baseline["scenarios"] else None
        target = TARGETS[name]
        table.add_row(
            name,
            f"{base:,}" if base is not None else "-",
            f"{now:,}",
            change(base, now),
            f"<= {target:,}" if target else "-",
            ("yes" if now <= target else "NO") if target else "-",
            f"{figure(current['scenarios'][name], 'gas'):,}",
        )
    console.print(table)

    calls = Table(title="max_liquidation_call: each call a liquidator needs (execution gas)")
    for col in ("#", "baseline call", "baseline", "current call", "current"):
        calls.add_column(col, justify="right" if col in ("#", "baseline", "current") else "left")
    now = current["scenarios"].get("max_liquidation_call", [])
    base = baseline["scenarios"]["max_liquidation_call"] if baseline else []
    for i in range(max(len(now), len(base))):
        b = base[i] if i < len(base) else None
        c = now[i] if i < len(now) else None
        calls.add_row(
            str(i + 1),
            b["label"] if b else "",
            f"{b['execution']:,}" if b else "",
            c["label"] if c else "",
            f"{c['execution']:,}" if c else "",
        )
    if now or base:
        console.print(calls)

    parts = Table(title="current tree: intrinsic + execution - refund = gas")
    for col in ("scenario", "call", "intrinsic", "execution", "refund", "gas"):
        parts.add_column(col, justify="left" if col in ("scenario", "call") else "right")
    for name in [n for n in ALL_SCENARIOS if n in current["scenarios"]]:
        for tx in current["scenarios"][name]:
            parts.add_row(
                name, tx["label"], f"{tx['intrinsic']:,}", f"{tx['execution']:,}", f"{tx['refund']:,}", f"{tx['gas']:,}"
            )
    console.print(parts)


def report(current: dict, baseline: dict, rev: str) -> dict:
    """The figures of reports/gas.json: every scenario on this tree; the baseline's of those it
    has (not `CURRENT_ONLY`)."""
    out: dict = {name: figure(current["scenarios"][name]) for name in ALL_SCENARIOS}
    out["baseline"] = {name: figure(baseline["scenarios"][name]) for name in SCENARIOS}
    out["baseline_rev"] = rev
    out["targets"] = {name: TARGETS[name] for name in SCENARIOS if TARGETS[name] is not None}
    out["receipt_gas"] = {name: figure(current["scenarios"][name], "gas") for name in ALL_SCENARIOS}
    out["baseline_receipt_gas"] = {name: figure(baseline["scenarios"][name], "gas") for name in SCENARIOS}
    out["max_liquidation_calls"] = {
        "current": [[tx["label"], tx["execution"]] for tx in current["scenarios"]["max_liquidation_call"]],
        "baseline": [[tx["label"], tx["execution"]] for tx in baseline["scenarios"]["max_liquidation_call"]],
    }
    return out


def update_report(old: dict, current: dict) -> dict:
    """`old` (a reports/gas.json) with the figures of the scenarios in `current` (this tree's
    `run_scenarios` of some of them) replaced; the baseline's stay."""
    out = dict(old)
    out["receipt_gas"] = dict(old.get("receipt_gas") or {})
    for name, txs in current["scenarios"].items():
        out[name] = figure(txs)
        out["receipt_gas"][name] = figure(txs, "gas")
    return out


def print_profile(console, trees: list, top: int = 15) -> None:
    """The call tree of each measured transaction, then titanoboa's line profile (boa.profiling's
    global profile, filled while `boa.env.enable_gas_profiling()` was on) by function and line."""
    from boa.profiling import global_profile
    from rich.markup import escape
    from rich.table import Table

    for label, rows in trees:
        if len(rows) <= 40:
            table = Table(title=f"{label}: call tree (execution gas; own = without child calls)")
            for col in ("call", "gas", "own"):
                table.add_column(col, justify="left" if col == "call" else "right")
            for depth, name, total, own in rows:
                table.add_row(escape("  " * depth + name), f"{total:,}", f"{own:,}")
            console.print(table)
            continue
        # a long tree: the calls by function, the top call first
        calls: dict = {}
        for depth, name, total, own in rows:
            count, total_sum, own_sum = calls.get((depth == 0, name), (0, 0, 0))
            calls[(depth == 0, name)] = (count + 1, total_sum + total, own_sum + own)
        table = Table(title=f"{label}: {len(rows)} calls by function (execution gas; own = without child calls)")
        for col in ("call", "calls", "gas", "own"):
            table.add_column(col, justify="left" if col == "call" else "right")
        for (_, name), (count, total, own) in sorted(calls.items(), key=lambda kv: (not kv[0][0], -kv[1][1]))[:top]:
            table.add_row(escape(name), str(count), f"{total:,}", f"{own:,}")
        console.print(table)

    prof = global_profile()
    by_fn: dict = {}
    by_line: dict = {}  # the same source line in several deployments or transactions: summed
    for info, gas_list in prof.line_profiles.items():
        gas = sum(gas_list)
        module = Path(info.module_path).name
        by_fn[(module, info.fn_name)] = by_fn.get((module, info.fn_name), 0) + gas
        key = (info.module_path, info.lineno, info.fn_name)
        by_line[key] = by_line.get(key, 0) + gas
    lines = [
        (gas, f"{Path(path).name}:{lineno}", fn, prof.get_module_line(path, lineno).strip())
        for (path, lineno, fn), gas in by_line.items()
    ]
    if len(trees) > 1:
        console.print(f"functions and lines below: summed over the {len(trees)} transactions above")
    fns = Table(title=f"top {top} functions by own gas (the gas of their lines; child calls excluded)")
    for col in ("module", "function", "gas"):
        fns.add_column(col, justify="right" if col == "gas" else "left")
    for (module, fn), gas in sorted(by_fn.items(), key=lambda kv: -kv[1])[:top]:
        fns.add_row(module, escape(str(fn)), f"{gas:,}")
    console.print(fns)
    table = Table(title=f"top {top} source lines by own gas (all iterations of a loop; child calls excluded)")
    for col in ("gas", "line", "function", "source"):
        table.add_column(col, justify="right" if col == "gas" else "left", overflow="fold")
    for gas, where, fn, source in sorted(lines, key=lambda r: -r[0])[:top]:
        table.add_row(f"{gas:,}", where, escape(str(fn)), escape(source[:120]))
    console.print(table)


# ---------------------------------------------------------------- entry points


def worker() -> None:
    """Run every scenario on the tree named by PYTHONPATH; print the result as JSON."""
    tree = Path(os.environ["PYTHONPATH"].split(os.pathsep)[0]).resolve()
    print(json.dumps(run_scenarios(tree)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    ap.add_argument(
        "--baseline", default=DEFAULT_BASELINE, help=f"git revision to compare with (default {DEFAULT_BASELINE})"
    )
    ap.add_argument(
        "--profile", metavar="NAME", choices=ALL_SCENARIOS, help="print the gas profile of one scenario on this tree"
    )
    ap.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="measure only these scenarios, on this tree (no baseline: seconds, not minutes), and update their "
        f"figures in an existing {REPORT.relative_to(ROOT)}; the other figures stay as they are",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker()
        return

    from rich.console import Console

    console = Console(width=160)
    start = time.perf_counter()
    if args.profile:
        current = run_scenarios(ROOT, (args.profile,), profile=True)
        for tx in current["scenarios"][args.profile]:
            console.print(
                f"{args.profile}: {tx['label']} gas {tx['gas']:,} (intrinsic {tx['intrinsic']:,}, "
                f"execution {tx['execution']:,}, refund {tx['refund']:,})"
            )
        print_profile(console, current["trees"])
        return

    if args.only:
        names = tuple(n.strip() for n in args.only.split(",") if n.strip())
        unknown = [n for n in names if n not in ALL_SCENARIOS]
        if unknown or not names:
            ap.error(f"--only: unknown scenario {', '.join(unknown) or '(none)'} (known: {', '.join(ALL_SCENARIOS)})")
        if not REPORT.exists():
            ap.error(f"--only updates {REPORT.relative_to(ROOT)}: run without --only first to write it")
        current = run_scenarios(ROOT, names)
        print_table(console, current, {}, args.baseline)
        out = update_report(json.loads(REPORT.read_text()), current)
        REPORT.write_text(json.dumps(out, indent=2) + "\n")
        if args.json:
            print(json.dumps(out))
        return

    try:
        resolve(args.baseline)
    except subprocess.CalledProcessError:
        ap.error(f"--baseline: {args.baseline!r} is not a commit of {ROOT}")
    baseline_run = BaselineRun(args.baseline)
    try:
        current = run_scenarios(ROOT, ALL_SCENARIOS)  # the baseline worker runs SCENARIOS only
        baseline = baseline_run.result()
    except BaseException:
        baseline_run.kill()
        raise
    print_table(console, current, baseline, args.baseline)
    console.print(
        f"current: {current['adapter']}; baseline {args.baseline} ({baseline_run.sha[:12]}): "
        f"{baseline['adapter']}; {time.perf_counter() - start:.0f} s"
    )
    out = report(current, baseline, args.baseline)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
