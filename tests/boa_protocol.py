"""The protocol deployed on titanoboa, with helpers to fund accounts, trade and move prices."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

import boa
from eth_account import Account

from keeper.chain.artifacts import CONTRACTS, NAMES, sources_digest
from keeper.chain.deploy import config_echo, deploy_protocol
from keeper.chain.deployment import Deployment
from keeper.chain.orders import Order, sign_order
from keeper.config import ProtocolConfig, load_config
from keeper.params.bounds import REQUIREMENT_RAMP

# titanoboa's compile cache keys a contract by a fingerprint of its imports that misses a change
# two imports down (lib/constants.vy read through lib/options_core.vy: stale bytecode), so each
# state of contracts/ gets a cache of its own
boa.interpret.set_cache_dir(str(Path("~/.cache/titanoboa").expanduser() / sources_digest()))

# config/local.yaml with position caps that do not bind (see the file)
CONTRACT_TESTS_CONFIG = Path(__file__).resolve().parent / "config" / "contract_tests.yaml"

WAD = 10**18


def now() -> int:
    """The timestamp of the block titanoboa is building (unix seconds)."""
    return boa.env.evm.patch.timestamp


def ceil_div(a: int, d: int) -> int:
    """ceil(a / d) for d > 0: the rounding up the contracts apply to requirements and penalties."""
    return -(-a // d)


def usd8(x: int | float) -> int:
    """A dollar price as an 8-decimal feed answer."""
    return int(round(x * 10**8))


def named(logs, name: str) -> list:
    """The decoded logs of `logs` whose event is `name`."""
    return [log for log in logs if type(log).__name__ == name]


def funded(p: "BoaProtocol", dollars: int) -> "User":
    """A new user holding `dollars` of settlement-token cash in the vault."""
    user = p.new_user()
    p.deposit_usd(user, dollars)
    return user


_last_liquidation: list = []


def liquidate(p: "BoaProtocol", liquidator, account, *, strict: bool = True) -> tuple[int, list]:
    """`MarginEngine.liquidate(account)` sent by `liquidator` (each a User or an address);
    returns (the closed notional, the call's decoded logs: engine and vault). `strict=False`
    keeps a log titanoboa cannot decode (raw) instead of raising. The logs are also kept until
    the next successful call, for `last_liquidation_logs`."""
    sender = liquidator if isinstance(liquidator, str) else liquidator.address
    with boa.env.prank(sender):
        notional = p.engine.liquidate(account if isinstance(account, str) else account.address)
        logs = p.engine.get_logs(strict=strict)
    _last_liquidation[:] = logs
    return notional, logs


def last_liquidation_logs(name: str) -> list:
    """Events named `name` of the last successful `liquidate` (engine and vault)."""
    return named(_last_liquidation, name)


# Every transaction in its own block, as on a chain that mines each one (Anvil's automine): the
# protocol refuses some things within one block (a liquidation of exposure opened in it), so
# tests that mean one block say so with `same_block()`.
_block_state = {"same_block": 0}
_execute_code = boa.environment.Env.execute_code


@functools.wraps(_execute_code)
def _execute_code_in_next_block(self, *args, **kwargs):
    modifying = kwargs.get("is_modifying", True) and not kwargs.get("simulate", False)
    if modifying and not _block_state["same_block"]:
        self.evm.patch.block_number += 1
    computation = _execute_code(self, *args, **kwargs)
    if modifying:
        _block_state["last"] = computation
    return computation


boa.environment.Env.execute_code = _execute_code_in_next_block


@contextlib.contextmanager
def same_block():
    """Run the transactions inside in one block (they still advance nothing else)."""
    _block_state["same_block"] += 1
    boa.env.evm.patch.block_number += 1
    try:
        yield
    finally:
        _block_state["same_block"] -= 1


def deployer(name: str):
    """Contract `name` (keeper.chain.artifacts.NAMES), compiled once per test session."""
    return source_deployer(NAMES[name])


class BoaBackend:
    def deploy(self, name: str, *args):
        return deployer(name).deploy(*args)

    def transact(self, contract, fn: str, *args):
        return getattr(contract, fn)(*args)

    def timestamp(self) -> int:
        return boa.env.evm.patch.timestamp


@dataclass
class User:
    address: str
    key: bytes


@dataclass
class BoaProtocol:
    config: ProtocolConfig
    deployment: Deployment
    admin: str
    oracle: object
    vault: object
    engine: object
    lens: object
    matching: object
    usdc: object
    tokens: dict
    feeds: dict
    backstop: object = None  # BackstopVault, when the config has `backstop_vault`
    _nonce: int = 0
    users: list = field(default_factory=list)

    @classmethod
    def deploy(cls, config: ProtocolConfig | None = None) -> "BoaProtocol":
        config = config or load_config(CONTRACT_TESTS_CONFIG)
        admin = boa.env.generate_address("admin")
        boa.env.eoa = admin
        dep = deploy_protocol(BoaBackend(), config, admin, boa.env.evm.patch.chain_id)
        at = lambda name, addr: deployer(name).at(addr)  # noqa: E731
        return cls(
            config=config,
            deployment=dep,
            admin=admin,
            oracle=at("OracleRouter", dep.oracle),
            vault=at("CollateralVault", dep.vault),
            engine=with_delegate_events(
                at("MarginEngine", dep.engine),
                at("EngineLiquidation", dep.engine_liquidation),
                at("EngineDeleveraging", dep.engine_deleveraging),
            ),
            lens=at("MarginLens", dep.lens),
            matching=at("Matching", dep.matching),
            usdc=at("MockERC20", dep.settlement_token),
            tokens={s: at("MockERC20", a) for s, a in dep.tokens.items()},
            feeds={s: at("MockAggregator", a) for s, a in dep.feeds.items()},
            backstop=at("BackstopVault", dep.backstop_vault) if dep.backstop_vault else None,
        )

    def new_user(self) -> User:
        acct = Account.create()
        user = User(acct.address, bytes(acct.key))
        self.users.append(user)
        return user

    def token(self, symbol: str):
        return self.usdc if symbol == self.config.settlement_symbol else self.tokens[symbol]

    def deposit(self, user: User, symbol: str, amount: int) -> None:
        """Mint `amount` token units to `user` and deposit them from the user."""
        token = self.token(symbol)
        token.mint(user.address, amount)
        with boa.env.prank(user.address):
            token.approve(self.vault.address, amount)
            self.vault.deposit(token.address, amount)

    def deposit_usd(self, user: User, dollars: int) -> None:
        self.deposit(user, self.config.settlement_symbol, dollars * 10**self.config.settlement_decimals)

    def fund_insurance(self, dollars: int | float) -> list:
        """Mint `dollars` of the settlement token to the admin and pay them into the insurance
        fund (`CollateralVault.fund_insurance`, which first retires bad debt); returns the
        vault's logs of the call."""
        units = round(dollars * 10**self.config.settlement_decimals)
        self.usdc.mint(self.admin, units)
        with boa.env.prank(self.admin):
            self.usdc.approve(self.vault.address, units)
            self.vault.fund_insurance(units)
        return self.vault.get_logs()

    def set_price(self, symbol: str, usd: float | int) -> None:
        """Publish a new answer on the price id's mock feed, stamped now."""
        decimals = self.deployment.feed_decimals[symbol]
        self.feeds[symbol].set_answer(int(round(usd * 10**decimals)))

    def phase_in(self) -> None:
        """Let every requirement raise phase in (REQUIREMENT_RAMP, lib/ramp.vy), then re-post
        every feed's answer so the index is fresh again."""
        boa.env.time_travel(seconds=REQUIREMENT_RAMP)
        for feed in self.feeds.values():
            republish(feed.address)

    def order(self, user: User, market: str | int, size: int, price: int, deadline: int | None = None) -> tuple:
        self._nonce += 1
        market_id = self.deployment.markets[market] if isinstance(market, str) else market
        order = Order(user.address, market_id, size, price, self._nonce, deadline or boa.env.evm.patch.timestamp + 3600)
        sig = sign_order(order, user.key, boa.env.evm.patch.chain_id, self.matching.address)
        return order.as_tuple(), sig

    def trade(self, buyer: User, seller: User, market: str | int, size: int, price: int) -> None:
        """`buyer` buys `size` (WAD units) from `seller` at `price` (WAD USD); buyer is the maker."""
        maker, maker_sig = self.order(buyer, market, size, price)
        taker, taker_sig = self.order(seller, market, -size, price)
        self.matching.match_orders(maker, maker_sig, taker, taker_sig)

    # single-account reads of `MarginEngine.margin_summary` (equity, IM, MM, health; WAD)
    def equity(self, account: str) -> int:
        return self.engine.margin_summary(account).equity

    def initial_margin(self, account: str) -> int:
        return self.engine.margin_summary(account).initial_margin

    def maintenance_margin(self, account: str) -> int:
        return self.engine.margin_summary(account).maintenance_margin

    def health_factor(self, account: str) -> int:
        return self.engine.margin_summary(account).health_factor


def events(contract, name: str) -> list:
    """Decoded logs named `name` from the last transaction (child calls included), whichever
    contract it entered through (a trade enters through the matching contract)."""
    return [log for log in contract.get_logs(computation=_block_state.get("last")) if type(log).__name__ == name]


def tx_logs(contract) -> list:
    """All logs of the last transaction (child calls included), whichever contract it entered
    through, decoded where the emitting contract is known (raw otherwise). Not
    `contract.get_logs()`: that reads the last call made through `contract`'s own handle, which
    for a trade (it enters through the matching contract) is some earlier call, often a view."""
    return contract.get_logs(computation=_block_state.get("last"), strict=False)


def with_delegate_events(contract, *codes) -> object:
    """`contract` (the engine or the option market), able to decode the events its delegate
    `codes` (liquidation, deleveraging) emit from its address by delegatecall (as
    `keeper.chain.artifacts.DELEGATES` does for the keeper's ABIs)."""
    for code in codes:
        contract.event_abi_for.update(code.event_abi_for)
    return contract


@functools.lru_cache(maxsize=None)
def source_deployer(relpath: str):
    """Compile any source under contracts/ (e.g. "mocks/NoReturnToken.vy", "lib/wad.vy"), once per session."""
    return boa.load_partial(str(CONTRACTS / relpath))


def deploy_unique(factory, *args):
    """Deploy from a fresh sender, so the contract gets an address never used before in the session
    (titanoboa's revert messages decode storage by address across rolled-back tests)."""
    with boa.env.prank(boa.env.generate_address()):
        return factory.deploy(*args)


# ---------------------------------------------------------------- options on top of the protocol

OPTION_ORDER_FIELDS = [
    {"name": "account", "type": "address"},
    {"name": "series", "type": "uint256"},
    {"name": "size", "type": "int256"},
    {"name": "limit_price", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


def option_order_typed_data(order: tuple, chain_id: int, matching: str) -> dict:
    """An option order tuple (account, series, size, limit_price, nonce, deadline) as EIP-712
    typed data for the matching contract (domain "CrossMargin", version "1"): the eth-account
    reference."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "OptionOrder": OPTION_ORDER_FIELDS,
        },
        "primaryType": "OptionOrder",
        "domain": {"name": "CrossMargin", "version": "1", "chainId": chain_id, "verifyingContract": matching},
        "message": dict(zip([f["name"] for f in OPTION_ORDER_FIELDS], order)),
    }


def sign_option_order(order: tuple, key: bytes, chain_id: int, matching: str) -> bytes:
    """65-byte EIP-712 signature of an option order tuple (eth-account)."""
    from keeper.chain.attestations import sign_typed_data

    typed = option_order_typed_data(order, chain_id, matching)
    (sig,) = sign_typed_data(typed, [key])
    return sig


# the options section the option tests deploy with (see the file): its signer is SIGNER_KEY's
OPTION_TESTS_CONFIG = Path(__file__).resolve().parent / "config" / "option_tests.yaml"

# steps of `deploy_protocol` (keeper.chain.deploy._deploy_options) that wire the option market
# into the engine and the vault
WIRING_STEPS = ("set_portfolio_modules", "set_option_market")


class _OptionsBackend(BoaBackend):
    """`BoaBackend` for adding the option market to a protocol deployed in the session, inside a
    test's rolled-back state: every contract comes from a fresh sender (`deploy_unique`, so its
    address was never used before in the session; the constructors take the admin as an
    argument) and every call is sent by the protocol's admin, as `deploy_protocol` requires.
    `skip`: names of calls not sent (an unwired market: `OptionsKit.deploy(wire=False)`)."""

    def __init__(self, p: BoaProtocol, skip: tuple[str, ...] = ()):
        self.admin = p.admin
        self.skip = skip
        # the protocol's own handles: a second handle on an address would replace the one
        # titanoboa decodes that address's logs with (the engine's carries its delegate's events)
        contracts = [p.oracle, p.vault, p.engine, p.lens, p.matching, p.usdc, *p.tokens.values(), *p.feeds.values()]
        self.handles = {str(c.address).lower(): c for c in contracts}

    def deploy(self, name: str, *args):
        return deploy_unique(deployer(name), *args)

    def transact(self, contract, fn: str, *args):
        if fn in self.skip:
            return None
        with boa.env.prank(self.admin):
            return getattr(contract, fn)(*args)

    def at(self, name: str, address: str):
        return self.handles.get(str(address).lower()) or deployer(name).at(address)

    def view(self, contract, fn: str, *args):
        return getattr(contract, fn)(*args)


@functools.lru_cache(maxsize=None)
def option_tests_options():
    """The `options:` section of tests/config/option_tests.yaml (an OptionsConfig)."""
    return load_config(OPTION_TESTS_CONFIG).options


@dataclass
class OptionsKit:
    """An OptionMarket, its VolFeed and HealthAttestor added to a BoaProtocol by
    `keeper.chain.deploy.deploy_protocol` with the `options:` section of
    tests/config/option_tests.yaml, as `keeper deploy` deploys them: the protocol's deployment
    record is resumed (its core steps are done) with that section, so the option steps run
    exactly as in a full deployment (contracts, parameters, signer sets, wiring). The kit's
    contracts are those of the resulting record, `deployment`. `signer` (SIGNER_KEY, the config's
    1-of-1 signer of both sets) signs vol updates and attestations.

    Two exceptions to what a user's deployment produces, both for what tests check:
    - `attestor=False` (the default): the user path always wires its HealthAttestor; the kit then
      turns it off as governance can (`engine.set_portfolio_modules(market, 0)`), so these tests
      see an engine that consults no attestor and counts no position versions. `attestor` is
      None.
    - `wire=False`: the wiring steps (WIRING_STEPS) are not sent, so that tests can check an
      option market the engine and vault do not use yet, and wire it later (`wire`)."""

    SIGNER_KEY = bytes(range(1, 33))

    p: BoaProtocol
    deployment: Deployment
    market: object
    vol_feed: object
    attestor: object | None
    signer: object

    @classmethod
    def deploy(cls, p: BoaProtocol, attestor: bool = False, wire: bool = True) -> "OptionsKit":
        signer = Account.from_key(cls.SIGNER_KEY)
        options = option_tests_options()
        assert options.vol_feed.signers.signers == options.attestation.signers.signers == (signer.address,)
        config = dataclasses.replace(p.config, options=options)
        progress = copy.deepcopy(p.deployment)  # the session's record of the core stays as it is
        progress.parameters = config_echo(config)
        backend = _OptionsBackend(p, skip=() if wire else WIRING_STEPS)
        dep = deploy_protocol(backend, config, p.admin, boa.env.evm.patch.chain_id, progress=progress)
        if not wire:
            for step in WIRING_STEPS:  # recorded as done, but not sent
                del dep.steps[step]
        market = with_delegate_events(
            deployer("OptionMarket").at(dep.option_market), deployer("OptionLiquidation").at(dep.option_liquidation)
        )
        kit = cls(
            p,
            dep,
            market,
            deployer("VolFeed").at(dep.vol_feed),
            deployer("HealthAttestor").at(dep.health_attestor) if attestor else None,
            signer,
        )
        if wire and not attestor:
            with boa.env.prank(p.admin):
                p.engine.set_portfolio_modules(market.address, ZERO_ADDRESS)
        return kit

    def wire(self) -> None:
        """What `deploy_protocol`'s wiring steps do (for a kit deployed with `wire=False`): the
        engine counts the market (and uses the attestor, if the kit has one), then the vault
        lets the market move cash."""
        with boa.env.prank(self.p.admin):
            attestor = self.attestor.address if self.attestor is not None else ZERO_ADDRESS
            self.p.engine.set_portfolio_modules(self.market.address, attestor)
            self.p.vault.set_option_market(self.market.address)

    def attestation(self, account: str, im: int, mm: int, validity: int = 600):
        """A HealthAttestation of (IM, MM) WAD USD for `account` now, at its current position version
        and index prices, under the attestor's governed scenario parameters hash."""
        from keeper.chain.attestations import HealthAttestation

        t = boa.env.evm.patch.timestamp
        return HealthAttestation(
            account,
            self.p.engine.position_version(account),
            tuple(self.p.oracle.index_prices()),
            im,
            mm,
            t,
            t + validity,
            bytes(self.attestor.scenario_params_hash()),
        )

    def set_vol(self, price_id: int, expiry: int, atm_vol: int, skew: int = 0) -> None:
        """Publish (atm_vol, skew) WAD for (price id, expiry), stamped now."""
        from keeper.chain.attestations import VolUpdate, sign_vol_update

        t = boa.env.evm.patch.timestamp
        upd = VolUpdate(price_id, expiry, atm_vol, skew, t, t + 60)
        self.vol_feed.submit_vol(
            *sign_vol_update(upd, [self.signer.key], boa.env.evm.patch.chain_id, self.vol_feed.address)
        )

    def list(self, underlying: int, strike: int, expiry: int, is_call: bool) -> int:
        with boa.env.prank(self.p.admin):
            return self.market.list_option(underlying, strike, expiry, is_call)

    def order(self, user: User, series: int, size: int, price: int) -> tuple:
        # one nonce sequence with the protocol's perpetual orders: both go to the one Matching
        self.p._nonce += 1
        order = (user.address, series, size, price, self.p._nonce, boa.env.evm.patch.timestamp + 3600)
        return order, sign_option_order(order, user.key, boa.env.evm.patch.chain_id, self.p.matching.address)

    def trade(self, buyer: User, seller: User, series: int, size: int, price: int) -> None:
        """`buyer` buys `size` (WAD units) of `series` from `seller` at premium `price`; buyer is the maker."""
        maker, maker_sig = self.order(buyer, series, size, price)
        taker, taker_sig = self.order(seller, series, -size, price)
        self.p.matching.match_option_orders(maker, maker_sig, taker, taker_sig)


ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


# ---------------------------------------------------------------- oracle feeds

FEED_DELAY = 2 * 86400  # OracleRouter.FEED_DELAY


def republish(address: str) -> None:
    """Publish a mock feed's latest answer again, stamped now."""
    agg = deployer("MockAggregator").at(address)
    agg.set_answer(agg.latestRoundData()[1])


def replace_feeds(oracle, price_id: int, aggregators: list, heartbeats: list) -> None:
    """Install feeds the way governance must: the first feeds of a price id (or new heartbeats)
    apply at once; a replacement is proposed, waits FEED_DELAY (every mock feed of the oracle is
    republished after the wait, so nothing goes stale), and is activated."""
    oracle.set_feeds(price_id, aggregators, heartbeats)
    if oracle.pending_feeds(price_id).activates_at == 0:
        return
    boa.env.time_travel(seconds=FEED_DELAY)
    live = {f.aggregator for i in range(oracle.price_id_count()) for f in oracle.feeds(i)}
    for address in live | set(aggregators):
        republish(address)
    oracle.activate_feeds(price_id)
