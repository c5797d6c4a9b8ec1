"""`keeper dev`: helpers for a local development chain (Anvil) only.

    keeper dev accounts [--count N] [--seed S]   open a small, varied book of accounts (with
                                                 option books on an options deployment)
    keeper dev price SYMBOL USD                  publish a new answer on a price id's mock feeds
    keeper dev warp SECONDS                      move chain time on, then re-post every mock
                                                 feed's answer so the oracle stays fresh

They move prices and time and mint tokens, so they refuse (one line, exit code 1) any chain
whose id is not a development chain id (Anvil's 31337) and any deployment whose price feeds and
tokens are not the mocks its own deployment created (the manifest's `steps` record each mock
deployed). Transactions are sent from Anvil's unlocked development accounts (mnemonic
"test test ... junk", public test keys): account 0 (the deployer) funds and sends, account 1
is the README's keeper (liquidator), account 2 the market maker on the other side of every
trade, accounts 3 and up the traders. On an options deployment the vol feed's signers must be
development accounts too (config/options.yaml: accounts 4 and 5) for fresh vols to be posted.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation, localcontext
from itertools import zip_longest
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from web3.exceptions import ContractLogicError, Web3RPCError

from keeper.chain.artifacts import load_artifact
from keeper.chain.client import ProtocolClient, connect
from keeper.chain.deploy import listing_strike
from keeper.chain.deployment import Deployment
from keeper.chain.manifest import load_manifest
from keeper.chain.types import FeedInfo, UnderlyingRates
from keeper.cli_common import chain_options, one_line_errors
from keeper.errors import KeeperError
from keeper.replay import option_books
from keeper.replay.driver import User, confirm, deposit_all, spec_deposits, trade_all
from keeper.replay.population import KIND_WEIGHTS, OPTION_DAYS, make_population
from keeper.risk.book import series_name
from keeper.units import MAX_UINT256, WAD

DEV_CHAIN_IDS = (31337,)  # Anvil's and Hardhat's default chain id
DEV_MNEMONIC = "test test test test test test test test test test test junk"  # Anvil's default: public
FUNDER, LIQUIDATOR, MAKER, FIRST_TRADER = 0, 1, 2, 3  # indices of Anvil's development accounts
MAKER_DEPOSIT_USD = 50_000_000
LIQUIDATOR_DEPOSIT_USD = 1_000_000  # the liquidator takes over closed positions and must meet IM
INSURANCE_USD = 1_000_000  # funded once, when the insurance fund is empty
MAX_INT256 = 2**255 - 1
# orders of one run use nonces from (next block) x NONCE_STRIDE up: a rerun never reuses one
NONCE_STRIDE = 10**6
POPULATION_POOL = 600  # specs drawn before picking each kind in turn (the rarest kind has ~4%)
# option books, every other account, in this order: calls and puts long and short in the first three
OPTION_ORDER = (
    "call_spread",
    "put_spread",
    "covered_call",
    "protective_put",
    "short_straddle",
    "risk_defined",
    "delta_hedged_straddle",
)
DEV_ATM_VOL = 0.8  # the ATM vol posted for every listed expiry (the population sizes delta hedges with it)
DEV_KEY_ACCOUNTS = 20  # the development accounts whose keys `keeper dev` knows (vol signers, an admin)
MIN_SERIES_LIFE = 86400  # a series expiring sooner is not traded; with none left, new ones are listed
LISTED_STRIKES = (0.9, 1.0, 1.1)  # listed (calls and puts, OPTION_DAYS out) when no series is live
LIST_GAS = 300_000

stdout = Console(width=None if sys.stdout.isatty() else 160)


@dataclass
class DevChain:
    """A development chain and the deployment `keeper dev` may drive."""

    w3: object
    deployment: Deployment
    client: ProtocolClient
    mocks: dict[str, str]  # lower-case address -> what the manifest deployed there ("feeds.ETH")

    def send(self, call, gas: int) -> bytes:
        """Send from the funder (Anvil account 0); the node signs and fills the fees."""
        return call.transact({"from": dev_account(FUNDER)[0], "gas": gas})

    def mock_feed(self, symbol: str, address: str):
        if self.mocks.get(address.lower()) is None:
            raise click.ClickException(
                f"feed {address} of {symbol} is not a mock feed this deployment created: `keeper dev` moves mock feeds only"
            )
        return self.w3.eth.contract(address=address, abi=load_artifact("MockAggregator").abi)

    def feeds(self, symbol: str) -> list[tuple[object, int]]:
        """The oracle's feeds of price id `symbol` as (mock feed contract, scale = 10**(18 - decimals))."""
        pid = self.deployment.price_ids[symbol]
        feeds = [FeedInfo.decode(f) for f in self.client.oracle.functions.feeds(pid).call()]
        return [(self.mock_feed(symbol, f.aggregator), f.scale) for f in feeds]

    def index_prices(self) -> dict[str, int]:
        """Price id symbol -> WAD index price (0 when the oracle has no valid feed for it)."""
        prices = self.client.oracle.functions.index_prices().call()
        return {s: prices[i] for s, i in self.deployment.price_ids.items()}


@functools.cache
def dev_account(index: int) -> tuple[str, bytes]:
    """Address and key of Anvil's development account `index` (BIP-44 m/44'/60'/0'/0/index of
    the public test mnemonic: never hold value with these keys)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return acct.address, bytes(acct.key)


def mock_addresses(deployment: Deployment) -> dict[str, str]:
    """Lower-case address -> step name of every mock feed and token the deployment created."""
    mocks = {}
    for step, record in deployment.steps.items():
        if (step == "settlement_token" or step.startswith(("feeds.", "tokens."))) and record.get("address"):
            mocks[record["address"].lower()] = step
    return mocks


_one_line_errors = one_line_errors(KeeperError)
_chain_options = chain_options


def open_dev_chain(rpc: str, manifest: Path) -> DevChain:
    """Connect and check that `keeper dev` may act: a development chain id, the manifest's
    chain with code at its engine, and mock feeds and tokens. Raises click.ClickException
    (or ManifestError / ChainError) with one line otherwise."""
    deployment = load_manifest(manifest)
    w3 = connect(rpc)
    chain_id = w3.eth.chain_id
    if chain_id not in DEV_CHAIN_IDS:
        raise click.ClickException(
            f"chain {chain_id} is not a local development chain (Anvil's chain id is 31337): "
            "`keeper dev` mints tokens and moves prices and time, on local chains only"
        )
    client = ProtocolClient(w3, deployment)
    client.check_chain()
    mocks = mock_addresses(deployment)
    named = [("settlement token", deployment.settlement_token)]
    named += [(f"token {s}", a) for s, a in deployment.tokens.items()]
    named += [(f"feed {s}", a) for s, a in deployment.feeds.items()]
    for what, address in named:
        if address.lower() not in mocks:
            raise click.ClickException(
                f"the deployment's {what} {address} is not a mock it created: `keeper dev` drives mock feeds and tokens only"
            )
    if dev_account(FUNDER)[0] not in w3.eth.accounts:
        raise click.ClickException(
            f"the node does not unlock Anvil's account 0 ({dev_account(FUNDER)[0]}): start anvil without --mnemonic"
        )
    return DevChain(w3, deployment, client, mocks)


@click.group("dev")
def dev() -> None:
    """Local development chains only: open accounts, move a price, move time."""


# ---------------------------------------------------------------- accounts


def _in_turn(pool, kinds, count: int) -> list:
    """The first `count` specs of `pool` taking each of `kinds` in turn."""
    by_kind = {k: [s for s in pool if s.kind == k] for k in kinds}
    picked: list = []
    while len(picked) < count:
        ready = [queue.pop(0) for queue in by_kind.values() if queue]
        if not ready:
            raise ValueError(f"the population of {POPULATION_POOL} has fewer than {count} accounts")
        picked += ready[: count - len(picked)]
    return picked


def varied_specs(count: int, prices: dict[str, float], seed: int, settlement: str, options: bool = False):
    """`count` specs from `make_population`, taking each kind in turn (long, short, future,
    basis, cross hedge, collateral long, ...) so that even a small book has every kind. With
    `options` every other account (the 2nd, 4th, ...) holds an option book instead, its kinds
    in the order OPTION_ORDER (call spread, put spread, covered call, protective put, ...): the
    perpetual/future accounts are the first ones of the same seed without options."""
    vols = {u: DEV_ATM_VOL for u in prices}
    # one pool: --count 2 = first 2 of --count 6
    pool = make_population(POPULATION_POOL, prices, seed, settlement, options=options, vols=vols)
    if not options:
        return _in_turn(pool, KIND_WEIGHTS, count)
    perps = _in_turn(pool, KIND_WEIGHTS, (count + 1) // 2)
    books = _in_turn(pool, OPTION_ORDER, count // 2)
    return [spec for pair in zip_longest(perps, books) for spec in pair if spec is not None]


def _underlying_index(chain: DevChain) -> dict[str, int]:
    """Underlying symbol -> WAD index price of its price id."""
    prices = chain.client.oracle.functions.index_prices().call()
    engine = chain.client.engine.functions
    return {
        u: prices[UnderlyingRates.decode(engine.underlyings(i).call()).price_id]
        for u, i in chain.deployment.underlyings.items()
    }


def _usd(wad: int) -> str:
    return f"{wad / WAD:,.2f}"


def _health(h: int) -> str:
    return "inf" if h == MAX_UINT256 else f"{h / WAD:.3f}"


def _print_book(chain: DevChain, users: list[User], title: str, options: bool) -> None:
    """The accounts' collateral, positions (option series too with `options`), and the engine's
    margin summary (through the lens: option values and standard margins included)."""
    dep = chain.deployment
    block = chain.w3.eth.block_number
    addresses = [u.address for u in users]
    snap = chain.client.snapshot(addresses, block)
    summaries = chain.client.margin_summaries(addresses, block)
    option_states = chain.client.option_states(addresses, block) if options else [[] for _ in users]
    series = {s.series_id: s for s in chain.client.option_series(block)} if options else {}
    symbols = chain.client.underlying_symbols() if options else ()
    markets = {i: name for name, i in dep.markets.items()}
    t = Table(title=title)
    numbers = ("equity (USD)", "MM (USD)", "options MM", "health")
    columns = ("account", "kind", "collateral", "positions", *numbers)
    for col in columns if options else [c for c in columns if c != "options MM"]:
        # the whole address, whatever the width: it is what the other commands take
        t.add_column(col, justify="right" if col in numbers else "left", no_wrap=col == "account")
    for row, (u, s, held) in enumerate(zip(users, summaries, option_states)):
        collateral = []
        if snap.book.cash[row]:
            collateral.append(f"{snap.book.cash[row] / WAD:,.2f} USDC")
        for symbol, asset_id in dep.asset_ids.items():
            balance = snap.book.collateral[row, asset_id]
            if balance:
                collateral.append(f"{balance / 10 ** dep.asset_decimals[symbol]:,.4f} {symbol}")
        positions = [
            f"{markets.get(m, m)} {snap.book.size[row, m] / WAD:+,.4f}"
            for m in range(snap.book.size.shape[1])
            if snap.book.size[row, m]
        ]
        positions += [
            f"{series_name(symbols[series[o.series].underlying], series[o.series])} {o.size / WAD:+,.4f}"
            for o in held
            if o.size
        ]
        # the part of the engine's MM the option market adds (standard margin, per position)
        option_mm = [_usd(sum(o.maintenance_margin for o in held)) if held else ""] if options else []
        t.add_row(
            u.address,
            u.spec.kind if u.spec else "",
            "\n".join(collateral),
            "\n".join(positions),
            _usd(s.equity),
            _usd(s.maintenance_margin),
            *option_mm,
            _health(s.health_factor),
        )
    stdout.print(t)


# ---------------------------------------------------------------- option books


@dataclass
class OptionSetup:
    """What opening option books needs, checked before the first transaction."""

    keys: list[bytes]  # keys of `threshold` of the vol feed's signers (development accounts)
    series: list[option_books.ListedSeries]  # the live series ([]: `lister` lists some)
    lister: str | None  # the option market's admin, a development account, when none is live


def _dev_addresses() -> set[str]:
    return {dev_account(i)[0].lower() for i in range(DEV_KEY_ACCOUNTS)}


def _live_series(chain: DevChain, now: int) -> list[option_books.ListedSeries]:
    """The listed series that expire more than MIN_SERIES_LIFE after `now`."""
    return [
        s
        for s in option_books.listed_series(chain.client.options, chain.deployment)
        if s.expiry > now + MIN_SERIES_LIFE
    ]


def option_setup(chain: DevChain, specs) -> OptionSetup:
    """The vol signers' keys and the series the option legs of `specs` trade, or a one-line
    click error: the vol feed's signers are not development accounts, or no series is live and
    the option market's admin is not a development account (a timelock) to list some, or a leg
    has no listed series of its underlying and type."""
    feed = chain.client.vol_feed
    signers = feed.functions.signers().call()
    threshold = feed.functions.threshold().call()
    dev = _dev_addresses()
    ours = [a for a in signers if a.lower() in dev]
    if len(ours) < threshold:
        raise click.ClickException(
            f"the vol feed needs {threshold} of its {len(signers)} signers and {len(ours)} of them are Anvil "
            "development accounts: `keeper dev accounts` cannot post vols (--no-options opens no option books)"
        )
    keys = option_books.dev_keys(ours[:threshold], DEV_KEY_ACCOUNTS)
    series = _live_series(chain, chain.w3.eth.get_block("latest")["timestamp"])
    if not series:
        admin = chain.client.options.functions.admin().call()
        if admin.lower() not in dev or admin not in chain.w3.eth.accounts:
            raise click.ClickException(
                f"the option market lists no series expiring in more than a day and its admin {admin} is not an "
                "Anvil development account (a timelock?) to list some: list series through governance, or pass --no-options"
            )
        return OptionSetup(keys, [], admin)
    listed = {(s.underlying, s.is_call) for s in series}
    missing = sorted({(und, is_call) for spec in specs for und, is_call, _, _ in spec.options} - listed)
    if missing:
        names = ", ".join(f"{und} {'calls' if is_call else 'puts'}" for und, is_call in missing)
        raise click.ClickException(
            f"the option market lists no live {names}, which the option books trade: pass --no-options"
        )
    return OptionSetup(keys, series, None)


def _list_series(chain: DevChain, lister: str, index: dict[str, int]) -> list[option_books.ListedSeries]:
    """List calls and puts at LISTED_STRIKES x the index, OPTION_DAYS out, on every underlying
    (sent by the option market's admin, a development account); returns the live series."""
    market = chain.client.options.functions
    now = chain.w3.eth.get_block("latest")["timestamp"]
    expiry = now + OPTION_DAYS * 86400
    hashes = [
        market.list_option(u, listing_strike(multiple, index[symbol]), expiry, is_call).transact(
            {"from": lister, "gas": LIST_GAS}
        )
        for symbol, u in chain.deployment.underlyings.items()
        for multiple in LISTED_STRIKES
        for is_call in (True, False)
    ]
    confirm(chain.w3, hashes, "list_option")
    return _live_series(chain, now)


def open_option_books(
    chain: DevChain, setup: OptionSetup, users: list[User], maker: User, index: dict[str, int]
) -> tuple[list[option_books.ListedSeries], int]:
    """List series if none is live, post fresh vols (ATM DEV_ATM_VOL, the replay's skew) for
    every live expiry, then trade the option legs of `users` against `maker` at the marks, sized
    by the replay's rule (keeper.replay.option_books.open_option_legs: the minimum position
    notional). Returns the series listed here ([] if none) and the number of vol points posted."""
    from keeper.chain.volfeed import post_vols

    series, listed = setup.series, []
    if setup.lister:
        series = listed = _list_series(chain, setup.lister, index)
    now = chain.w3.eth.get_block("latest")["timestamp"]
    feed = chain.client.vol_feed.functions
    updates = [
        u
        for u in option_books.vol_updates(series, {und: DEV_ATM_VOL for und in index}, now)
        if feed.vol_params(u.underlying, u.expiry).call()[2] < now  # else posted this second: fresh
    ]
    post_vols(chain.w3, chain.deployment, setup.keys, updates, dev_account(FUNDER)[0])
    holders = [u for u in users if u.spec.options]
    start = {und: p / WAD for und, p in index.items()}
    hashes = option_books.open_option_legs(chain.send, chain.client, series, holders, [maker], start, now + 86400)
    confirm(chain.w3, hashes, "option trade")
    return listed, len(updates)


@dev.command()
@click.option(
    "--count",
    type=click.IntRange(1, 100),
    default=6,
    show_default=True,
    help="Accounts to open (Anvil accounts 3 and up; more than 7 needs `anvil --accounts N+3`).",
)
# seed 23: all six kinds on both underlyings, one on WETH collateral; ETH at 1,500 (-25%) makes
# three of them liquidatable, none with negative equity (the README's walkthrough)
@click.option(
    "--seed", type=int, default=23, show_default=True, help="Seed of the portfolios (keeper.replay.population)."
)
@click.option(
    "--liquidator",
    default=None,
    metavar="ADDRESS",
    help="Also deposit 1,000,000 USDC for this liquidator [default: Anvil account 1, the README's keeper].",
)
@click.option(
    "--options/--no-options",
    default=None,
    help="Open option books on every other account (posting fresh vols first) [default: on when the deployment has an option market].",
)
@_chain_options
@_one_line_errors
def accounts(count, seed, liquidator, options, rpc, manifest) -> None:
    """Open a small, varied book: cash and WETH/WBTC collateral, leveraged longs and shorts, a
    future, a basis trade, a cross-asset hedge, sized at the current index prices, each trade
    matched at the index against a market maker (Anvil account 2). On an options deployment
    every other account holds an option book instead (spreads, a covered call, a protective put,
    straddles), traded at the marks against the market maker after fresh vols are posted."""
    from eth_utils import is_address, to_checksum_address

    chain = open_dev_chain(rpc, manifest)
    dep = chain.deployment
    unlocked = set(chain.w3.eth.accounts)
    needed = [dev_account(i) for i in range(FIRST_TRADER, FIRST_TRADER + count)]
    if any(address not in unlocked for address, _ in needed):
        raise click.ClickException(
            f"the node unlocks {len(unlocked)} accounts; --count {count} needs {FIRST_TRADER + count} "
            f"(0 deployer, 1 keeper, 2 market maker, then the traders): start `anvil --accounts {FIRST_TRADER + count}`"
        )
    if liquidator is None:
        liquidator = dev_account(LIQUIDATOR)[0]
    elif not is_address(liquidator):
        raise click.ClickException(f"--liquidator is not an address: {liquidator!r}")
    liquidator = to_checksum_address(liquidator)
    index = _underlying_index(chain)
    stale = sorted(u for u, p in index.items() if p == 0)
    if stale:
        raise click.ClickException(
            f"no valid index price for {', '.join(stale)} (mock feeds older than their heartbeat?): run `keeper dev warp 0`"
        )
    abi = load_artifact("MockERC20").abi
    settlement_token = chain.w3.eth.contract(address=dep.settlement_token, abi=abi)
    settlement = settlement_token.functions.symbol().call()
    if options is None:
        options = chain.client.options is not None
    elif options and chain.client.options is None:
        raise click.ClickException(
            "--options: the deployment has no option market (deploy one with `keeper deploy --config config/options.yaml`)"
        )
    try:
        specs = varied_specs(count, {u: p / WAD for u, p in index.items()}, seed, settlement, options)
    except ValueError as e:
        raise click.ClickException(f"cannot size the book: {e}") from None
    setup = option_setup(chain, specs) if options and any(s.options for s in specs) else None
    first_nonce = (chain.w3.eth.block_number + 1) * NONCE_STRIDE
    users = [User(address, key, spec, nonce=first_nonce) for (address, key), spec in zip(needed, specs)]
    maker = User(*dev_account(MAKER), nonce=first_nonce)

    tokens = {s: chain.w3.eth.contract(address=a, abi=abi) for s, a in dep.tokens.items()}
    tokens[settlement] = settlement_token
    decimals = {**dep.asset_decimals, settlement: dep.settlement_decimals}
    usd = 10**dep.settlement_decimals
    deposits = [
        (maker.address, settlement, MAKER_DEPOSIT_USD * usd),
        (liquidator, settlement, LIQUIDATOR_DEPOSIT_USD * usd),
        *spec_deposits(users, decimals),
    ]
    vault = chain.client.vault
    insurance = (settlement, INSURANCE_USD * usd) if vault.functions.insurance_fund().call() == 0 else None
    funder = dev_account(FUNDER)[0]
    confirm(chain.w3, deposit_all(chain.send, vault, tokens, funder, deposits, insurance=insurance), "deposit")
    confirm(chain.w3, trade_all(chain.send, chain.client.matching, dep, [(u, maker) for u in users], index), "trade")
    listed, posted = open_option_books(chain, setup, users, maker, index) if setup is not None else ([], 0)

    _print_book(chain, users, f"{count} accounts opened at block {chain.w3.eth.block_number}", options)
    prices = ", ".join(f"{u} {p / WAD:,.2f}" for u, p in index.items())
    stdout.print(f"sized and traded at the index prices: {prices} USD")
    stdout.print(f"market maker {maker.address} (Anvil account 2) holds the other side of every trade")
    if setup is not None:
        minimum = chain.client.engine.functions.min_position_notional().call()
        if listed:
            stdout.print(
                f"listed {len(listed)} option series ({OPTION_DAYS} days, strikes "
                f"{', '.join(f'{m:g}' for m in LISTED_STRIKES)} x the index): none was live"
            )
        stdout.print(
            f"option legs traded at the marks after posting {posted} vol point(s) (ATM {DEV_ATM_VOL:.0%}, skew "
            f"{option_books.SKEW:+g} per unit of ln(K/F)); each position at least the minimum notional {_usd(minimum)} USD"
        )
    stdout.print(
        f"liquidator {liquidator} has {LIQUIDATOR_DEPOSIT_USD:,} {settlement} more in the vault"
        + (f"; insurance fund funded with {INSURANCE_USD:,} {settlement}" if insurance else "")
    )


# ---------------------------------------------------------------- price


def parse_usd(text: str) -> Decimal:
    """A positive, finite USD amount ("1500", "1500.25", "1,500"); click error otherwise."""
    try:
        value = Decimal(text.replace(",", "").replace("_", ""))
    except InvalidOperation:
        raise click.ClickException(f"USD must be a number like 1500 or 1500.25, got {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise click.ClickException(f"USD must be a positive number, got {text!r}")
    return value


def _liquidatable_line(chain: DevChain, block: int) -> str:
    """'liquidatable now: k of n accounts ...' over every account that ever deposited or traded."""
    found = sorted(chain.client.discover_accounts(chain.deployment.deploy_block, block))
    if not found:
        return "no accounts yet (`keeper dev accounts` opens some)"
    try:
        summaries = chain.client.margin_summaries(found, block)
    except (ContractLogicError, Web3RPCError) as e:
        return f"margins cannot be read at this price ({e})"
    bad = [(a, s) for a, s in zip(found, summaries) if s.equity < s.maintenance_margin]
    listed = "".join(
        f"\n  {a}  equity {_usd(s.equity)} < MM {_usd(s.maintenance_margin)} USD, health {_health(s.health_factor)}"
        for a, s in bad
    )
    return f"liquidatable now (equity < maintenance margin): {len(bad)} of {len(found)} accounts{listed}"


@dev.command()
@click.argument("symbol")
@click.argument("usd")
@_chain_options
@_one_line_errors
def price(symbol, usd, rpc, manifest) -> None:
    """Publish USD as the new answer of every mock feed of price id SYMBOL (e.g. ETH 1500)."""
    chain = open_dev_chain(rpc, manifest)
    symbol = symbol.upper()
    if symbol not in chain.deployment.price_ids:
        raise click.ClickException(
            f"unknown price id {symbol!r}: the deployment has {', '.join(chain.deployment.price_ids)}"
        )
    value = parse_usd(usd)
    before = chain.index_prices()[symbol]
    hashes = []
    for feed, scale in chain.feeds(symbol):
        decimals = 18 - (len(str(scale)) - 1)  # scale = 10**(18 - decimals)
        with localcontext(prec=100):
            answer = int(value.scaleb(decimals).to_integral_value())  # nearest unit of the feed's decimals
        if not 0 < answer <= MAX_INT256:
            raise click.ClickException(f"{usd} USD is not a positive int256 answer at the feed's {decimals} decimals")
        hashes.append(chain.send(feed.functions.set_answer(answer), 200_000))
    confirm(chain.w3, hashes, "set_answer")
    block = chain.w3.eth.block_number
    after = chain.index_prices()[symbol]
    was = _usd(before) if before else "no valid price"
    now = _usd(after) if after else "NO VALID PRICE (the oracle rejects the answer: circuit breaker band or max jump?)"
    stdout.print(f"{symbol}/USD: {len(hashes)} mock feed(s) now answer {value:,f} USD (block {block})")
    stdout.print(f"index price {symbol}: {was} -> {now} USD")
    stdout.print(_liquidatable_line(chain, block))


# ---------------------------------------------------------------- warp


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _rpc(w3, method: str, params: list):
    response = w3.provider.make_request(method, params)
    if "error" in response:
        raise click.ClickException(f"{method} failed: {response['error'].get('message', response['error'])}")
    return response.get("result")


@dev.command()
@click.argument("seconds", type=click.IntRange(0, 10 * 365 * 86400))
@_chain_options
@_one_line_errors
def warp(seconds, rpc, manifest) -> None:
    """Move chain time on by SECONDS (evm_increaseTime + evm_mine), then re-post every mock
    feed's latest answer so that the oracle is fresh again (0: only re-post)."""
    chain = open_dev_chain(rpc, manifest)
    feeds = [(symbol, feed) for symbol in chain.deployment.price_ids for feed, _ in chain.feeds(symbol)]
    start = chain.w3.eth.get_block("latest")["timestamp"]
    if seconds:
        _rpc(chain.w3, "evm_increaseTime", [seconds])
        _rpc(chain.w3, "evm_mine", [])
    moved = chain.w3.eth.get_block("latest")
    answers = [(symbol, feed, feed.functions.latestRoundData().call()[1]) for symbol, feed in feeds]
    confirm(
        chain.w3, [chain.send(feed.functions.set_answer(answer), 200_000) for _, feed, answer in answers], "set_answer"
    )
    stdout.print(
        f"chain time {_utc(start)} -> {_utc(moved['timestamp'])} (+{moved['timestamp'] - start:,} s), block {moved['number']}"
    )
    index = chain.index_prices()
    listed = ", ".join(f"{s} {_usd(p)}" if p else f"{s} NO VALID PRICE" for s, p in index.items())
    stdout.print(
        f"re-posted the latest answer of {len(answers)} mock feed(s) so the oracle is fresh "
        f"(a feed older than its heartbeat is ignored): index prices {listed} USD"
    )
