"""Stateful property test of the whole protocol (vault + engine + oracle) on titanoboa.

A hypothesis `RuleBasedStateMachine` drives five users through random deposits, withdrawals,
trades on the four markets, oracle price moves, time jumps (funding accrual, futures expiry),
liquidations (and penalty-ramp flags), futures settlement and insurance funding. The protocol is deployed once per
session; every example runs inside a `boa.env.anchor()` and is rolled back in `teardown()`.

Every rule predicts its own outcome from the previous state with an exact Python mirror of the
engine's valuation (same formulas, same rounding) and asserts that the contract agrees: a
rejected action must revert with the expected reason and leave every byte of protocol state
unchanged; an accepted one must change exactly what it should and nothing else.

Invariants checked after EVERY step (see `ProtocolMachine.invariants_hold`):
  1. Accounting / solvency: per collateral token, balanceOf(vault) == sum of account balances
     == the asset's recorded total; USDC.balanceOf(vault) == settlement_total == USDC deposited
     less withdrawn (tracked here); and
         sum(cash) + insurance_fund + sum(unrealized position value) - bad_debt
     is <= the USDC deposited less withdrawn (WAD) and within 2 wei per (open position + fill)
     of it: PnL and funding are zero-sum, and each rounding favours the protocol (USDC withheld
     from a withdrawal beyond the bad debt it retires is counted as the protocol's). Also
     total_positive_cash == sum of max(cash, 0).
  2. Zero-sum: per market, sum of position sizes == 0 (sizes already realized in a settled
     future are carried in `settled_out`); open_interest == sum of the longs.
  3. No action other than a price move or a time jump turns an account that met initial margin
     into one below it, except the liquidated account (settle_market included: it must not
     raise any requirement).
  4. A liquidation succeeds only on an account that was liquidatable, and never lowers its
     health factor unless it leaves the account with nothing it could close (no positions, or
     only futures past expiry awaiting settlement); the liquidator meets IM. An account whose
     only positions are futures past expiry is refused with "engine: nothing to liquidate".
  5. Insurance fund decreases only with a `DeficitCovered` event (by at most what it reports);
     bad debt grows exactly by the `DeficitCovered.bad_debt` amounts and, since bad debt is
     socialized (1e961df), shrinks only by `BadDebtRetired` amounts, in a cash withdrawal
     (pro-rata haircut, mirrored exactly) or when money reaches the fund.
  6. Funding: `funding_time` never moves backwards and never past now; a stored funding index
     changes only when `funding_time` moves forward, to exactly the accrued value; the rate
     follows the documented EMA and stays within the cap; futures never accrue funding.
Plus: each account's equity / IM / MM / health factor equals the Python mirror to the wei,
accounts not involved in an action are left untouched by it, and a penalty-ramp flag is only
set by flag_liquidatable and only cleared by a liquidation that restores health.

Steps: 40 examples x 40 steps (1,600 steps, about two minutes in CI) in the ci and dev hypothesis
profiles (tests/profiles.py: ci derandomized, dev exploring); a longer run, 500 x 60:
`bin/test tests/contracts/test_invariants.py --hypothesis-profile deep`.
`INVARIANT_STATS=1` (with `-s`) prints outcome counts.
"""

from __future__ import annotations

import os
import time
from collections import Counter, namedtuple
from dataclasses import dataclass, field

import boa
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from keeper.risk.margin import AccountBook, MarketTable, RiskParams, margin
from tests import profiles
from tests.boa_protocol import ceil_div, named, tx_logs

WAD = 10**18
MAX_UINT = 2**256 - 1
FUNDING_PERIOD = 8 * 3600
DAY = 86400
EXPIRY_RAMP = 7 * DAY  # a future's netting credit fades over its last week
N_USERS = 5

# (examples, steps per example) by hypothesis profile (tests/profiles.py)
SETTINGS = profiles.machine_settings({"ci": (40, 40), "dev": (40, 40), "deep": (500, 60)})

STATS: Counter = Counter()

# ---------------------------------------------------------------- exact mirror of the contracts


def vdiv(a: int, d: int) -> int:
    """Vyper's `//` on int256: truncates towards zero."""
    q = abs(a) // abs(d)
    return q if (a < 0) == (d < 0) else -q


def charge(amount: int, price: int, rate: int) -> int:
    """`MarginEngine._charge`: ceil(amount * price * rate / 1e36)."""
    return ceil_div(amount * price * rate, WAD * WAD)


def health(equity: int, mm: int) -> int:
    """`MarginEngine._health`."""
    if equity <= 0:
        return MAX_UINT if (mm == 0 and equity == 0) else 0
    if mm == 0:
        return MAX_UINT
    return equity * WAD // mm


Mkt = namedtuple("Mkt", "underlying is_perp expiry settlement_price funding_rate funding_index funding_time")
Summary = namedtuple("Summary", "equity im mm hf")


def funding_now(mk: Mkt, price: int, now: int) -> int:
    """`MarginEngine._funding_index_now`."""
    if not mk.is_perp or now <= mk.funding_time:
        return mk.funding_index
    return mk.funding_index + vdiv(vdiv(mk.funding_rate * price, WAD) * (now - mk.funding_time), FUNDING_PERIOD)


def position_value(size: int, entry: int, fidx: int, mark: int, f_now: int) -> int:
    """`MarginEngine._position_value`: PnL rounded down, funding owed rounded up."""
    return (size * (mark - entry)) // WAD - ceil_div(size * (f_now - fidx), WAD)


@dataclass(frozen=True)
class Snap:
    """Everything the invariants look at, read in a handful of batched calls."""

    now: int
    prices: tuple
    cash: tuple  # per user, WAD
    coll: tuple  # per user, tuple of token units by asset id
    pos: tuple  # per user, dict market -> (size, entry_price, funding_index)
    summ: tuple  # per user, Summary from the contract
    markets: tuple  # Mkt per market id
    insurance: int
    bad_debt: int
    settlement_total: int
    vault_tokens: tuple  # balanceOf(vault): settlement token, then assets by id
    asset_totals: tuple
    total_positive_cash: int
    open_interest: tuple  # per market
    flags: tuple  # per user: liquidatable_since
    raw_states: object = field(default=None, compare=False, repr=False)  # lens.account_states, for the keeper

    def state(self) -> tuple:
        return (
            self.cash,
            self.coll,
            self.pos,
            self.markets,
            self.insurance,
            self.bad_debt,
            self.settlement_total,
            self.vault_tokens,
            self.asset_totals,
            self.total_positive_cash,
            self.open_interest,
            self.flags,
        )

    def user(self, i: int) -> tuple:
        return self.cash[i], self.coll[i], self.pos[i]


class World:
    """The session's deployed protocol, its five users and its (static) parameters."""

    def __init__(self, p):
        self.p = p
        self.users = [p.new_user() for _ in range(N_USERS)]
        self.addrs = [u.address for u in self.users]
        self.engine, self.vault, self.oracle, self.matching = p.engine, p.vault, p.oracle, p.matching
        self.lens = p.lens  # batched views (account_states, margin_summaries)
        self.scale = self.vault.SETTLEMENT_SCALE()
        self.usdc_symbol = p.config.settlement_symbol
        self.asset_syms = sorted(p.deployment.asset_ids, key=p.deployment.asset_ids.get)
        Asset = namedtuple("Asset", "token decimals price_id haircut cap")
        self.assets = []
        for i, sym in enumerate(self.asset_syms):
            a = self.vault.assets(i)
            self.assets.append(Asset(p.tokens[sym], a.decimals, a.price_id, a.haircut, a.deposit_cap))
        Und = namedtuple("Und", "price_id im mm spread_im spread_mm")
        self.und = [Und(*tuple(self.engine.underlyings(u))) for u in range(self.engine.underlying_count())]
        self.n_markets = self.engine.market_count()
        self.market_names = {v: k for k, v in p.deployment.markets.items()}
        self.futures = [m for m in range(self.n_markets) if not self.engine.markets(m).is_perpetual]
        self.markets_underlying = [self.engine.markets(m).underlying for m in range(self.n_markets)]
        self.max_position = [self.engine.max_position(m) for m in range(self.n_markets)]
        self.max_open_interest = [self.engine.max_open_interest(m) for m in range(self.n_markets)]
        self.max_dev = self.engine.max_price_deviation()
        self.max_funding = self.engine.max_funding_rate()
        self.smoothing = self.engine.funding_smoothing()
        self.feed_syms = list(p.feeds)
        self.tokens = [p.usdc] + [a.token for a in self.assets]

    def token(self, sym: str):
        return self.p.usdc if sym == self.usdc_symbol else self.p.tokens[sym]

    # ------------------------------------------------------------ reads

    def snapshot(self, prev: Snap | None = None, involved=None) -> Snap:
        """Read the protocol state. Margin summaries are read from the contract for every user
        whose valuation inputs may have changed (all of them without `prev`, after a time or
        price move, or when `involved` is None); the others keep `prev`'s, which is exact
        because a summary is a pure function of the inputs compared here."""
        e, v = self.engine, self.vault
        states = self.lens.account_states(self.addrs)
        now = boa.env.evm.patch.timestamp
        prices = tuple(self.oracle.index_prices())
        cash = tuple(s.cash for s in states)
        coll = tuple(tuple(s.collateral) for s in states)
        pos = tuple({q.market: (q.size, q.entry_price, q.funding_index) for q in s.positions} for s in states)
        markets = tuple(Mkt(*tuple(e.markets(m))) for m in range(self.n_markets))
        if prev is None or involved is None or (now, prices) != (prev.now, prev.prices):
            stale = set(range(N_USERS))
        else:
            moved = {m for m in range(self.n_markets) if markets[m] != prev.markets[m]}
            stale = set(involved) | {
                i for i in range(N_USERS) if (cash[i], coll[i], pos[i]) != prev.user(i) or moved & set(pos[i])
            }
        stale = sorted(stale)
        fresh = dict(zip(stale, self.lens.margin_summaries([self.addrs[i] for i in stale]))) if stale else {}
        summ = tuple(
            Summary(fresh[i].equity, fresh[i].initial_margin, fresh[i].maintenance_margin, fresh[i].health_factor)
            if i in fresh
            else prev.summ[i]
            for i in range(N_USERS)
        )
        return Snap(
            now=now,
            prices=prices,
            cash=cash,
            coll=coll,
            pos=pos,
            summ=summ,
            markets=markets,
            insurance=v.insurance_fund(),
            bad_debt=v.bad_debt(),
            settlement_total=v.settlement_total(),
            vault_tokens=tuple(t.balanceOf(v.address) for t in self.tokens),
            asset_totals=tuple(v.assets(i).total for i in range(len(self.assets))),
            total_positive_cash=v.total_positive_cash(),
            open_interest=tuple(e.open_interest(m) for m in range(self.n_markets)),
            flags=tuple(e.liquidatable_since(a) for a in self.addrs),
            raw_states=states,
        )

    # ------------------------------------------------------------ mirror

    def collateral_value(self, coll, prices) -> int:
        return sum(b * prices[a.price_id] * a.haircut // (10**a.decimals * WAD) for b, a in zip(coll, self.assets) if b)

    def summary(self, cash, coll, pos, markets, prices, now) -> Summary:
        """`MarginEngine._summary`, to the wei."""
        equity = cash + self.collateral_value(coll, prices)
        longs = [0] * len(self.und)
        shorts = [0] * len(self.und)
        alone = [0] * len(self.und)  # futures in their last week: the part that no longer nets
        for m, (size, entry, fidx) in pos.items():
            mk = markets[m]
            mark = mk.settlement_price or prices[self.und[mk.underlying].price_id]
            equity += position_value(size, entry, fidx, mark, funding_now(mk, mark, now))
            if mk.settlement_price:
                continue
            amount = abs(size)
            if not mk.is_perp and now + EXPIRY_RAMP > mk.expiry:
                netted = amount * max(mk.expiry - now, 0) // EXPIRY_RAMP
                alone[mk.underlying] += amount - netted
                amount = netted
            if size > 0:
                longs[mk.underlying] += amount
            else:
                shorts[mk.underlying] += amount
        im = mm = 0
        for u, par in enumerate(self.und):
            if longs[u] == 0 and shorts[u] == 0 and alone[u] == 0:
                continue
            price = prices[par.price_id]
            net, off = abs(longs[u] - shorts[u]), min(longs[u], shorts[u])
            im += charge(net, price, par.im) + charge(off, price, par.spread_im) + charge(alone[u], price, par.im)
            mm += charge(net, price, par.mm) + charge(off, price, par.spread_mm) + charge(alone[u], price, par.mm)
        return Summary(equity, im, mm, health(equity, mm))

    def expiry_price(self, m: int, expiry: int) -> int:
        """`OracleRouter.expiry_price` for this deployment's single feed per price id, read from
        the mock feed's history: the answer of its first round stamped at or after expiry (0 if
        none yet). One feed, so a late first round still counts (no timely one exists)."""
        name = self.oracle.price_id_name(self.und[self.markets_underlying[m]].price_id)
        feed = self.p.feeds[name]
        scale = 10 ** (18 - feed.decimals())
        latest = feed.latestRoundData()
        if latest[3] < expiry:
            return 0
        for r in range(1, latest[0] + 1):
            rd = feed.getRoundData(r)
            if rd[3] >= expiry:
                return rd[1] * scale if rd[1] > 0 else 0
        return 0

    def settled_view(self, s: Snap, i: int):
        """User i after `MarginEngine._settle_expired(i)` at the snapshot's block, as liquidate
        and settle_positions do first (5be7072): its futures past expiry settle at the oracle's
        expiry price (the first round at or after expiry), then its positions in settled markets
        are realized into cash. Returns (markets, cash, positions, summary)."""
        markets = list(s.markets)
        cash, pos = s.cash[i], dict(s.pos[i])
        for m in list(pos):
            mk = markets[m]
            if mk.settlement_price == 0 and not mk.is_perp and s.now >= mk.expiry:
                markets[m] = mk = mk._replace(settlement_price=self.expiry_price(m, mk.expiry))
            if mk.settlement_price:
                size, entry, fidx = pos.pop(m)
                cash += position_value(size, entry, fidx, mk.settlement_price, mk.funding_index)
        markets = tuple(markets)
        return markets, cash, pos, self.summary(cash, s.coll[i], pos, markets, s.prices, s.now)

    @staticmethod
    def closable(s: Snap, i: int) -> bool:
        """Whether user i holds a position a liquidation can close (not settled, not past expiry)."""
        return any(
            s.markets[m].settlement_price == 0 and (s.markets[m].is_perp or s.now < s.markets[m].expiry)
            for m in s.pos[i]
        )

    def unrealized(self, s: Snap, i: int) -> int:
        total = 0
        for m, (size, entry, fidx) in s.pos[i].items():
            mk = s.markets[m]
            mark = mk.settlement_price or s.prices[self.und[mk.underlying].price_id]
            total += position_value(size, entry, fidx, mark, funding_now(mk, mark, s.now))
        return total

    def index_of(self, s: Snap, m: int) -> int:
        return s.prices[self.und[s.markets[m].underlying].price_id]


_WORLD: World | None = None


def reason(err: Exception) -> str:
    frame = err.stack_trace.last_frame
    return frame if isinstance(frame, str) else str(frame.pretty_vm_reason)


def meets_im(s: Summary) -> bool:
    return s.equity >= s.im


def trade_allowed(old: int, new: int, before: Summary, after: Summary) -> bool:
    """`lib/trade_rules.vy` `_trade_allowed` (checked against the contract in
    test_contract_core.py::test_trade_rule_mirror_equals_the_contract)."""
    if after.equity >= after.im:
        return True
    reducing = (old > 0 and 0 <= new < old) or (old < 0 and old < new <= 0)
    if not reducing or after.im > before.im:
        return False
    if before.equity < before.mm:  # below maintenance: may de-risk, never hand equity away
        return after.equity >= before.equity
    if after.hf < before.hf:
        return False
    return after.equity - after.im >= before.equity - before.im


# ---------------------------------------------------------------- strategies

USER = st.integers(0, N_USERS - 1)
OTHER = st.integers(1, N_USERS - 1)  # offset to a distinct second user
MODE = st.integers(0, 19)  # small modes select edge cases (1 unit, over cap, all, all + 1)
FRACTION = st.integers(0, 1000)  # per mille (hypothesis skews wide integer ranges towards 0)
ASSET_SYM = st.sampled_from(["USDC", "WETH", "WBTC"])
# largest random amounts, whole tokens / whole underlying
MAX_DEPOSIT = {"USDC": 2_000_000, "WETH": 1_000, "WBTC": 60}
MAX_SIZE = {0: 400, 1: 25}  # per underlying id: ETH, BTC


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.w = _WORLD
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.net_usdc = 0  # settlement token units deposited (and funded) less withdrawn
        self.unassigned = 0  # WAD withheld from withdrawals beyond the bad debt it retired
        self.fills = 0  # PositionChanged events so far: bound on rounding
        self.settled_out = [0] * self.w.n_markets
        self.prev = self.w.snapshot()
        self.base_settlement = self.prev.settlement_total
        self.base_ledger = self._ledger(self.prev)
        self.ctx: dict | None = None
        self._market_states_key = None
        self.steps = 0
        STATS["examples"] += 1

    def teardown(self):
        self._anchor.__exit__(None, None, None)
        STATS[f"len:{self.steps // 10 * 10:03d}+"] += 1

    # ------------------------------------------------------------ helpers

    def _ledger(self, s: Snap) -> int:
        return sum(s.cash) + s.insurance + sum(self.w.unrealized(s, i) for i in range(N_USERS)) - s.bad_debt

    def _set_ctx(self, kind: str, involved=(), outcome=None, **extra):
        assert self.ctx is None, "two actions in one step"
        self.ctx = dict(kind=kind, involved=set(involved), outcome=outcome, **extra)
        STATS[f"{kind}:{'ok' if outcome is None else outcome}"] += 1

    def _engine_logs(self):
        logs = tx_logs(self.w.engine)
        self.fills += sum(1 for lg in logs if type(lg).__name__ == "PositionChanged")
        return logs

    def _mint_approve(self, sym: str, user, amount: int):
        token = self.w.token(sym)
        token.mint(user.address, amount)
        with boa.env.prank(user.address):
            token.approve(self.w.vault.address, amount)
        return token

    def _decimals(self, sym: str) -> int:
        return self.w.p.config.settlement_decimals if sym == "USDC" else self.w.assets[self._aid(sym)].decimals

    def _aid(self, sym: str) -> int:
        return self.w.asset_syms.index(sym)

    # ------------------------------------------------------------ rules

    @initialize(
        usd=st.lists(st.integers(0, 500_000), min_size=N_USERS, max_size=N_USERS),
        weth=st.lists(st.integers(0, 100), min_size=N_USERS, max_size=N_USERS),
    )
    def seed_accounts(self, usd, weth):
        """Starting capital, so that most examples trade from the first steps."""
        w = self.w
        for i, user in enumerate(w.users):
            for sym, whole in (("USDC", usd[i]), ("WETH", weth[i])):
                if whole == 0:
                    continue
                amount = whole * 10 ** self._decimals(sym)
                token = self._mint_approve(sym, user, amount)
                with boa.env.prank(user.address):
                    w.vault.deposit(token.address, amount)
                if sym == "USDC":
                    self.net_usdc += amount
        self._set_ctx("seed", range(N_USERS))

    @rule(i=USER, sym=ASSET_SYM, mode=MODE, x=FRACTION)
    def deposit(self, i, sym, mode, x):
        w, s = self.w, self.prev
        user = w.users[i]
        expected = None
        if mode == 0:
            amount = 1
        elif mode == 1 and sym != "USDC":  # one unit above the deposit cap
            a = self._aid(sym)
            amount = w.assets[a].cap - s.asset_totals[a] + 1
            expected = "vault: deposit cap exceeded"
        else:
            amount = max(1, x * MAX_DEPOSIT[sym] * 10 ** self._decimals(sym) // 1000)
            if sym != "USDC" and s.asset_totals[self._aid(sym)] + amount > w.assets[self._aid(sym)].cap:
                expected = "vault: deposit cap exceeded"
        token = self._mint_approve(sym, user, amount)
        wallet = token.balanceOf(user.address)
        outcome = None
        try:
            with boa.env.prank(user.address):
                w.vault.deposit(token.address, amount)
        except boa.BoaError as e:
            outcome = reason(e)
        assert outcome == expected, f"deposit {amount} {sym}: {outcome!r}, expected {expected!r}"
        assert token.balanceOf(user.address) == wallet - (amount if outcome is None else 0)
        if outcome is None and sym == "USDC":
            self.net_usdc += amount
        self._set_ctx("deposit", [i], outcome, sym=sym, amount=amount)

    @rule(i=USER, sym=ASSET_SYM, mode=MODE, x=FRACTION)
    def withdraw(self, i, sym, mode, x):
        w, s = self.w, self.prev
        user = w.users[i]
        token = w.token(sym)
        if sym == "USDC":
            held = max(s.cash[i], 0) // w.scale
        else:
            held = s.coll[i][self._aid(sym)]
        amount = {0: 1, 1: held, 2: held + 1}.get(mode, held * x // 1000)
        amount = max(amount, 1)
        # predict with the mirror
        cash, coll = s.cash[i], list(s.coll[i])
        withheld = 0  # share of outstanding bad debt kept back from a cash withdrawal
        if sym == "USDC":
            expected = "vault: insufficient cash" if cash < amount * w.scale else None
            if expected is None and s.bad_debt:
                withheld = min(amount, ceil_div(amount * s.bad_debt, s.total_positive_cash))
            # Liquidity limit (test_withdraw_of_realized_profit_waits_for_liquidity), checked before
            # IM: cash owed by accounts margined with WETH/WBTC is not yet in USDC
            if expected is None and amount - withheld > s.settlement_total:
                expected = "vault: settlement liquidity short"
            cash -= amount * w.scale
        else:
            a = self._aid(sym)
            expected = "vault: insufficient collateral" if coll[a] < amount else None
            coll[a] -= amount
        if expected is None and not meets_im(w.summary(cash, coll, s.pos[i], s.markets, s.prices, s.now)):
            expected = "vault: below initial margin"
        paid = amount - withheld
        wallet = token.balanceOf(user.address)
        outcome, logs = None, []
        try:
            with boa.env.prank(user.address):
                w.vault.withdraw(token.address, amount)
            logs = w.vault.get_logs(strict=False)
        except boa.BoaError as e:
            outcome = reason(e)
        assert outcome == expected, f"withdraw {amount} {sym}: {outcome!r}, expected {expected!r}"
        assert token.balanceOf(user.address) == wallet + (paid if outcome is None else 0), "wallet"
        if outcome is None and sym == "USDC":
            self.net_usdc -= paid
            # tokens withheld beyond the bad debt they retire (rounding up) stay in the vault
            self.unassigned += withheld * w.scale - sum(r.amount for r in named(logs, "BadDebtRetired"))
        self._set_ctx("withdraw", [i], outcome, sym=sym, amount=amount, paid=paid, withheld=withheld, logs=logs)

    def _trade(self, b, off, m, size_mode, size_x, band, bps, out_bps, out_sign):
        w, s = self.w, self.prev
        sl = (b + off) % N_USERS
        mk = s.markets[m]
        index = w.index_of(s, m)
        free = min(s.summ[b].equity - s.summ[b].im, s.summ[sl].equity - s.summ[sl].im)
        if size_mode == 0:
            size = 1
        elif size_mode <= 4 and free > 0:  # up to all the free margin of the tighter side
            size = max(1, free * size_x // 1000 * WAD * WAD // (index * w.und[mk.underlying].im))
        else:
            size = max(1, size_x * MAX_SIZE[mk.underlying] * WAD // 1000)
        if band == 0:  # outside the +-5% band: must revert
            bps = out_sign * out_bps
        price = index * (10_000 + bps) // 10_000
        in_band = abs(price - index) * WAD <= index * w.max_dev
        # predict with the mirror
        expected = None
        if mk.settlement_price != 0 or (not mk.is_perp and s.now >= mk.expiry):
            expected = "engine: market expired"
        elif not in_band:
            expected = "engine: price too far from index"
        else:
            f = funding_now(mk, index, s.now)
            sizes = []
            for i, delta in ((b, size), (sl, -size)):
                pos = dict(s.pos[i])
                old = pos.get(m)
                old_size = old[0] if old else 0
                realized = position_value(*old, price, f) if old else 0
                if old_size + delta == 0:
                    del pos[m]
                else:
                    pos[m] = (old_size + delta, price, f)
                after = w.summary(s.cash[i] + realized, s.coll[i], pos, s.markets, s.prices, s.now)
                sizes.append((old_size, old_size + delta))
                if not trade_allowed(old_size, old_size + delta, s.summ[i], after):
                    expected = "engine: below initial margin"
                    break
            else:  # position and open-interest caps bind trades that grow a position
                oi = s.open_interest[m] + sum(max(new, 0) - max(old, 0) for old, new in sizes)
                for old, new in sizes:
                    if abs(new) > abs(old) and w.max_position[m] and abs(new) > w.max_position[m]:
                        expected = "engine: position above cap"
                    elif abs(new) > abs(old) and w.max_open_interest[m] and oi > w.max_open_interest[m]:
                        expected = "engine: open interest above cap"
                    if expected:
                        break
        nonce0 = w.p._nonce
        outcome, logs = None, []
        try:
            w.p.trade(w.users[b], w.users[sl], m, size, price)
            logs = self._engine_logs()
        except boa.BoaError as e:
            outcome = reason(e)
        if not in_band:
            assert outcome in ("engine: price too far from index", "engine: market expired"), outcome
        assert outcome == expected, (
            f"trade {w.market_names[m]} size {size} at {price} (index {index}): {outcome!r}, expected {expected!r}"
        )
        if outcome is not None:  # a rejected order must not burn its nonce
            assert not w.matching.nonce_used(w.addrs[b], nonce0 + 1)
            assert not w.matching.nonce_used(w.addrs[sl], nonce0 + 2)
        self._set_ctx(
            "trade", [b, sl], outcome, buyer=b, seller=sl, market=m, size=size, price=price, index=index, logs=logs
        )

    TRADE_ARGS = dict(
        b=USER,
        off=OTHER,
        m=st.integers(0, 3),
        size_mode=st.integers(0, 9),
        size_x=FRACTION,
        band=st.integers(0, 7),
        bps=st.integers(-500, 500),
        out_bps=st.integers(501, 3000),
        out_sign=st.sampled_from([-1, 1]),
    )

    @rule(**TRADE_ARGS)
    def trade(self, **kw):
        self._trade(**kw)

    @rule(**TRADE_ARGS)
    def trade_more(self, **kw):  # trading is the main activity: three times the weight
        self._trade(**kw)

    @rule(**TRADE_ARGS)
    def trade_again(self, **kw):
        self._trade(**kw)

    def _liquidate(self, i, liq):
        w, s = self.w, self.prev
        # the engine first settles the account's expired futures, then judges it
        markets, _cash, pos, pre = w.settled_view(s, i)
        liquidatable = pre.equity < pre.mm
        # left for settlement: only futures past expiry that no post-expiry price can settle yet
        stuck = bool(pos) and not any(markets[m].is_perp or s.now < markets[m].expiry for m in pos)
        outcome, logs = None, []
        try:
            with boa.env.prank(w.addrs[liq]):
                w.engine.liquidate(w.addrs[i])
            logs = self._engine_logs()
        except boa.BoaError as e:
            outcome = reason(e)
        if liquidatable and stuck:
            assert outcome == "engine: nothing to liquidate", f"liquidation of expired futures only: {outcome!r}"
        elif liquidatable:
            assert outcome in (None, "engine: liquidator below IM"), f"liquidation: {outcome!r}"
        else:
            assert outcome == "engine: account not liquidatable", f"healthy account liquidated: {outcome!r}"
        self._set_ctx("liquidate", [i, liq], outcome, account=i, liquidator=liq, logs=logs, pre=pre)

    LIQUIDATE_ARGS = dict(i=USER, off=OTHER, pick=st.integers(0, 3))

    @rule(**LIQUIDATE_ARGS)
    def liquidate(self, i, off, pick):
        """Liquidate a random account, or (3 times in 4) a liquidatable one if there is one."""
        s = self.prev
        bad = [k for k in range(N_USERS) if s.summ[k].equity < s.summ[k].mm]
        if pick and bad:
            i = bad[i % len(bad)]
        self._liquidate(i, (i + off) % N_USERS)

    @rule(**LIQUIDATE_ARGS)
    def liquidate_again(self, i, off, pick):  # twice the weight
        self.liquidate(i, off, pick)

    @rule(**LIQUIDATE_ARGS)
    def flag_liquidatable(self, i, off, pick):
        """Start an account's penalty ramp (a liquidatable one 3 times in 4, if any)."""
        w, s = self.w, self.prev
        bad = [k for k in range(N_USERS) if s.summ[k].equity < s.summ[k].mm]
        if pick and bad:
            i = bad[i % len(bad)]
        expected = None if s.summ[i].equity < s.summ[i].mm else "engine: account not liquidatable"
        outcome = None
        try:
            with boa.env.prank(w.addrs[(i + off) % N_USERS]):
                w.engine.flag_liquidatable(w.addrs[i])
        except boa.BoaError as e:
            outcome = reason(e)
        assert outcome == expected, f"flag_liquidatable: {outcome!r}, expected {expected!r}"
        self._set_ctx("flag", [], outcome, account=i)

    PRICE_ARGS = dict(sym=st.sampled_from(["ETH", "BTC"]), bps=st.integers(-3000, 3000))

    @rule(**PRICE_ARGS)
    def move_price(self, sym, bps):
        """Multiply an underlying's price by a factor in [0.7, 1.3] (kept positive)."""
        feed = self.w.p.feeds[sym]
        answer = feed.latestRoundData()[1]
        feed.set_answer(max(1, answer * (10_000 + bps) // 10_000))
        self._set_ctx("price")

    @rule(**PRICE_ARGS)
    def move_price_again(self, sym, bps):  # price moves drive liquidations: twice the weight
        self.move_price(sym, bps)

    def _time_jump(self, seconds):
        boa.env.time_travel(seconds=seconds)
        for sym in self.w.feed_syms:  # refresh (heartbeat 1 h) at the same price
            feed = self.w.p.feeds[sym]
            feed.set_answer(feed.latestRoundData()[1])
        self._set_ctx("time", seconds=seconds)

    @rule(seconds=st.integers(1, DAY))
    def time_jump(self, seconds):
        self._time_jump(seconds)

    @rule(seconds=st.integers(20 * DAY, 30 * DAY))
    def time_jump_long(self, seconds):
        self._time_jump(seconds)

    @rule(seconds=st.integers(365 * DAY, 2 * 365 * DAY))
    def time_jump_years(self, seconds):
        """Years pass: futures expire, funding accrues for thousands of periods."""
        self._time_jump(seconds)

    @rule(k=st.integers(0, 1))
    def settle_market(self, k):
        w, s = self.w, self.prev
        m = w.futures[k % len(w.futures)]
        expected = None if s.now >= s.markets[m].expiry else "engine: not expired"
        if expected is None and s.markets[m].settlement_price == 0 and not w.expiry_price(m, s.markets[m].expiry):
            expected = "engine: price before expiry"
        outcome = None
        try:
            w.engine.settle_market(m)
        except boa.BoaError as e:
            outcome = reason(e)
        assert outcome == expected, f"settle_market {m}: {outcome!r}, expected {expected!r}"
        self._set_ctx("settle_market", range(N_USERS), outcome, market=m)

    @rule(i=USER, pick=st.integers(0, 3))
    def settle_positions(self, i, pick):
        """Realize an account's settled futures (3 times in 4 one that holds some, if any)."""
        s = self.prev
        holders = [k for k in range(N_USERS) if any(s.markets[m].settlement_price for m in s.pos[k])]
        if pick and holders:
            i = holders[i % len(holders)]
        expected = self.w.settled_view(s, i)  # settles its expired futures first (5be7072)
        self.w.engine.settle_positions(self.w.addrs[i])
        self._set_ctx("settle_positions", [i], None, logs=self._engine_logs(), expected=expected)

    @rule(i=USER, x=st.integers(1, 50_000 * 10**6))
    def fund_insurance(self, i, x):
        user = self.w.users[i]
        self._mint_approve("USDC", user, x)
        with boa.env.prank(user.address):
            self.w.vault.fund_insurance(x)
        self.net_usdc += x
        self._set_ctx("fund_insurance", [], None, amount=x, logs=self.w.vault.get_logs(strict=False))

    @rule(i=USER, k=st.integers(0, 7))
    def cancel_nonce(self, i, k):
        """Cancel one of a few nonces this machine never signs with; twice reverts."""
        w = self.w
        nonce = 10**12 + k
        expected = "matching: nonce used" if w.matching.nonce_used(w.addrs[i], nonce) else None
        outcome = None
        try:
            with boa.env.prank(w.addrs[i]):
                w.matching.cancel_nonce(nonce)
        except boa.BoaError as e:
            outcome = reason(e)
        assert outcome == expected, f"cancel_nonce: {outcome!r}, expected {expected!r}"
        assert w.matching.nonce_used(w.addrs[i], nonce)
        self._set_ctx("cancel_nonce", [], outcome)

    # ------------------------------------------------------------ invariants

    @invariant(check_during_init=True)
    def invariants_hold(self):
        w = self.w
        new = w.snapshot(self.prev, None if self.ctx is None else self.ctx["involved"])
        STATS["steps"] += self.ctx is not None
        self.steps += self.ctx is not None
        if self.ctx is not None:
            self._check_transition(self.prev, new, self.ctx)
            if self.ctx["kind"] in ("trade", "liquidate", "settle_positions") and self.ctx["outcome"] is None:
                # positions(user, market) itself, not only the engine's per-account market list
                for i in range(N_USERS):
                    for m in range(w.n_markets):
                        p = w.engine.positions(w.addrs[i], m)
                        assert (p.size, p.entry_price, p.funding_index) == new.pos[i].get(m, (0, 0, 0)), (
                            f"user {i} market {m}: positions() {tuple(p)} != account_states {new.pos[i].get(m)}"
                        )
        self._check_state(new)
        STATS["liquidatable_accounts_seen"] += sum(x.equity < x.mm for x in new.summ)
        STATS["open_positions_seen"] += sum(len(p) for p in new.pos)
        self.prev, self.ctx = new, None

    def _check_state(self, s: Snap):
        w = self.w
        # the keeper's risk engine equals the contract on the fuzzed state, to the wei
        # (same block: the snapshot's reads; risk parameters are static in this machine)
        book = AccountBook.from_states(s.raw_states, len(w.assets), w.n_markets)
        # market_states is a pure function of (time, prices, stored markets): re-read it only when they move
        key = (s.now, s.prices, s.markets)
        if self._market_states_key != key:
            self._market_states, self._market_states_key = w.lens.market_states(), key
        markets = MarketTable.from_states(self._market_states, s.now)
        params = RiskParams(
            price_id=[u.price_id for u in w.und],
            im_rate=[u.im for u in w.und],
            mm_rate=[u.mm for u in w.und],
            spread_im_rate=[u.spread_im for u in w.und],
            spread_mm_rate=[u.spread_mm for u in w.und],
            asset_price_id=[a.price_id for a in w.assets],
            asset_decimals=[a.decimals for a in w.assets],
            asset_haircut=[a.haircut for a in w.assets],
        )
        keeper = margin(book, markets, params, list(s.prices))
        for i in range(N_USERS):
            got = (keeper.equity[i], keeper.initial_margin[i], keeper.maintenance_margin[i], keeper.health_factor[i])
            assert got == tuple(s.summ[i]), f"user {i}: keeper {got} != contract {tuple(s.summ[i])}"
        # mirror: equity / IM / MM / health to the wei
        for i in range(N_USERS):
            mirror = w.summary(s.cash[i], s.coll[i], s.pos[i], s.markets, s.prices, s.now)
            assert mirror == s.summ[i], f"user {i}: contract {s.summ[i]} != mirror {mirror}"
        # 1. token custody
        for a in range(len(w.assets)):
            held = sum(s.coll[i][a] for i in range(N_USERS))
            assert s.vault_tokens[1 + a] == held == s.asset_totals[a], (
                f"asset {a}: vault holds {s.vault_tokens[1 + a]}, accounts {held}, total {s.asset_totals[a]}"
            )
        assert s.vault_tokens[0] == s.settlement_total == self.base_settlement + self.net_usdc
        # 1. cash ledger: PnL and funding zero-sum, rounding in the protocol's favour
        n_pos = sum(len(p) for p in s.pos)
        slack = self._ledger(s) - self.base_ledger - self.net_usdc * w.scale + self.unassigned
        assert -2 * (n_pos + self.fills) <= slack <= 0, (
            f"ledger off by {slack} wei ({n_pos} positions, {self.fills} fills)"
        )
        assert s.total_positive_cash == sum(max(c, 0) for c in s.cash), "total_positive_cash"
        # 2. zero-sum sizes; open interest is the sum of the longs
        for m in range(w.n_markets):
            total = sum(p[m][0] for p in s.pos if m in p) + self.settled_out[m]
            assert total == 0, f"market {m}: sizes sum to {total}"
            longs = sum(max(p[m][0], 0) for p in s.pos if m in p)
            assert s.open_interest[m] == longs, f"market {m}: open interest {s.open_interest[m]} != longs {longs}"
        # 6. static funding bounds
        for mk in s.markets:
            assert mk.funding_time <= s.now
            assert abs(mk.funding_rate) <= w.max_funding
            if not mk.is_perp:
                assert mk.funding_rate == 0 and mk.funding_index == 0

    def _check_transition(self, a: Snap, b: Snap, ctx: dict):
        w = self.w
        kind, outcome = ctx["kind"], ctx["outcome"]
        logs = ctx.get("logs", [])
        if kind not in ("time", "price"):
            assert (a.now, a.prices) == (b.now, b.prices), "clock or prices moved"

        # rejected action: nothing at all changed
        if outcome is not None:
            assert a.state() == b.state() and a.summ == b.summ, f"rejected {kind} ({outcome}) changed state"
            return

        # price move / time jump: stored state untouched, only valuations move
        if kind in ("time", "price"):
            assert a.state() == b.state(), f"{kind} changed stored state"
            return

        # accounts not involved are untouched; a future settled in this step (settle_market, or
        # first thing in liquidate / settle_positions) may only lower their requirements
        settled_now = {m for m in range(w.n_markets) if a.markets[m].settlement_price != b.markets[m].settlement_price}
        for i in range(N_USERS):
            if i not in ctx["involved"]:
                assert a.user(i) == b.user(i), f"{kind} touched uninvolved user {i}"
                if settled_now & set(a.pos[i]):
                    # its expired futures are now marked at the expiry price, not the index
                    expected = w.summary(a.cash[i], a.coll[i], a.pos[i], b.markets, a.prices, a.now)
                    assert b.summ[i].equity == expected.equity, f"{kind} changed user {i}'s equity"
                    assert b.summ[i].im <= a.summ[i].im and b.summ[i].mm <= a.summ[i].mm, (
                        f"settlement raised user {i}'s margin"
                    )
                else:
                    assert a.summ[i] == b.summ[i], f"{kind} touched uninvolved user {i}"

        # 3. IM preserved for every account but the liquidated one
        for i in range(N_USERS):
            if kind == "liquidate" and i == ctx["account"]:
                continue
            if meets_im(a.summ[i]):
                assert meets_im(b.summ[i]), f"{kind} pushed user {i} below IM: {a.summ[i]} -> {b.summ[i]}"

        # 5. insurance fund and bad debt: bad debt grows only by DeficitCovered and shrinks only
        #    by BadDebtRetired (socialized over withdrawals, or paid by money reaching the fund)
        deficits = named(logs, "DeficitCovered")
        retired = sum(r.amount for r in named(logs, "BadDebtRetired"))
        assert b.bad_debt - a.bad_debt == sum(d.bad_debt for d in deficits) - retired, (
            f"bad debt {a.bad_debt} -> {b.bad_debt} without matching DeficitCovered / BadDebtRetired"
        )
        if retired:
            assert kind in ("withdraw", "fund_insurance", "liquidate"), f"{kind} retired bad debt"
            STATS[f"bad_debt_retired_by:{kind}"] += 1
        if b.insurance < a.insurance:
            assert deficits and a.insurance - b.insurance <= sum(d.from_insurance for d in deficits), (
                f"insurance fund fell by {a.insurance - b.insurance} outside DeficitCovered"
            )

        # penalty-ramp flags: set by flag_liquidatable (once), cleared by a liquidation that
        # leaves the account healthy; nothing else touches them
        for j in range(N_USERS):
            if kind == "flag" and j == ctx["account"]:
                # a flag older than two ramp times (3600 s each) is stale and restarts
                fresh = a.flags[j] and b.now - a.flags[j] < 2 * 3600
                assert b.flags[j] == (a.flags[j] if fresh else b.now), "flag_liquidatable"
            elif kind == "liquidate" and j == ctx["account"] and b.summ[j].equity >= b.summ[j].mm:
                assert b.flags[j] == 0, "a liquidation that restored health left the flag set"
            else:
                assert b.flags[j] == a.flags[j], f"{kind} changed user {j}'s liquidation flag"

        # 2. track sizes realized in settled futures; they only ever go to zero
        for i in range(N_USERS):
            for m, (size, *_rest) in a.pos[i].items():
                if b.markets[m].settlement_price != 0:
                    now_size = b.pos[i].get(m, (0,))[0]
                    assert now_size in (0, size), "position in a settled market changed size"
                    if now_size == 0:
                        self.settled_out[m] += size

        # 6. funding: forward only, exactly the accrued value
        changed_markets = set()
        for m, (ma, mb) in enumerate(zip(a.markets, b.markets)):
            assert mb.funding_time >= ma.funding_time, f"market {m}: funding_time went back"
            if mb.funding_index != ma.funding_index:
                assert mb.funding_time > ma.funding_time, f"market {m}: funding index changed in place"
            if mb.funding_time != ma.funding_time:
                assert mb.funding_time == b.now
                assert mb.funding_index == funding_now(ma, w.index_of(a, m), a.now), f"market {m}: accrual jump"
            if ma != mb:
                changed_markets.add(m)
            assert (ma.underlying, ma.is_perp, ma.expiry) == (mb.underlying, mb.is_perp, mb.expiry)

        getattr(self, f"_after_{kind}")(a, b, ctx, changed_markets)

    def _same_globals(self, a, b, **expected):
        fields = dict(
            insurance=a.insurance,
            bad_debt=a.bad_debt,
            settlement_total=a.settlement_total,
            vault_tokens=a.vault_tokens,
            asset_totals=a.asset_totals,
            markets=a.markets,
            open_interest=a.open_interest,
        )
        fields.update(expected)
        for k, v in fields.items():
            assert getattr(b, k) == v, f"{k}: {getattr(b, k)} != {v}"

    def _after_seed(self, a, b, ctx, changed):
        assert not changed

    def _after_flag(self, a, b, ctx, changed):
        assert not changed
        self._same_globals(a, b)

    def _after_cancel_nonce(self, a, b, ctx, changed):
        assert not changed
        self._same_globals(a, b)

    def _after_deposit(self, a, b, ctx, changed):
        w, sym, amt = self.w, ctx["sym"], ctx["amount"]
        (i,) = ctx["involved"]
        if sym == "USDC":
            assert b.cash[i] == a.cash[i] + amt * w.scale and b.coll[i] == a.coll[i]
            vt = (a.vault_tokens[0] + amt,) + a.vault_tokens[1:]
            self._same_globals(a, b, settlement_total=a.settlement_total + amt, vault_tokens=vt)
        else:
            k = self._aid(sym)
            assert b.cash[i] == a.cash[i] and b.coll[i][k] == a.coll[i][k] + amt
            vt = list(a.vault_tokens)
            vt[1 + k] += amt
            tot = list(a.asset_totals)
            tot[k] += amt
            self._same_globals(a, b, vault_tokens=tuple(vt), asset_totals=tuple(tot))
        assert b.pos[i] == a.pos[i]

    def _after_withdraw(self, a, b, ctx, changed):
        w, sym, amt = self.w, ctx["sym"], ctx["amount"]
        (i,) = ctx["involved"]
        assert meets_im(b.summ[i]), "withdrawal left the account below IM"
        if sym == "USDC":
            paid, withheld = ctx["paid"], ctx["withheld"]
            assert b.cash[i] == a.cash[i] - amt * w.scale >= 0 and b.coll[i] == a.coll[i]
            vt = (a.vault_tokens[0] - paid,) + a.vault_tokens[1:]
            self._same_globals(
                a,
                b,
                settlement_total=a.settlement_total - paid,
                vault_tokens=vt,
                bad_debt=a.bad_debt - min(withheld * w.scale, a.bad_debt),
            )
        else:
            k = self._aid(sym)
            assert b.cash[i] == a.cash[i] and b.coll[i][k] == a.coll[i][k] - amt
            vt = list(a.vault_tokens)
            vt[1 + k] -= amt
            tot = list(a.asset_totals)
            tot[k] -= amt
            self._same_globals(a, b, vault_tokens=tuple(vt), asset_totals=tuple(tot))
        assert b.pos[i] == a.pos[i]

    def _after_fund_insurance(self, a, b, ctx, changed):
        amt = ctx["amount"]
        vt = (a.vault_tokens[0] + amt,) + a.vault_tokens[1:]
        retired = min(amt * self.w.scale, a.bad_debt)  # money for the fund retires bad debt first
        self._same_globals(
            a,
            b,
            insurance=a.insurance + amt * self.w.scale - retired,
            bad_debt=a.bad_debt - retired,
            settlement_total=a.settlement_total + amt,
            vault_tokens=vt,
        )

    def _after_trade(self, a, b, ctx, changed):
        w, m, size, price, index = self.w, ctx["market"], ctx["size"], ctx["price"], ctx["index"]
        assert changed <= {m}
        for i, delta in ((ctx["buyer"], size), (ctx["seller"], -size)):
            old = a.pos[i].get(m, (0, 0, 0))[0]
            new = b.pos[i].get(m)
            if old + delta == 0:
                assert new is None
            else:
                assert new is not None and new[0] == old + delta and new[1] == price
            assert b.coll[i] == a.coll[i]
            for other in set(a.pos[i]) | set(b.pos[i]):
                if other != m:
                    assert a.pos[i].get(other) == b.pos[i].get(other)
        ma, mb = a.markets[m], b.markets[m]
        if ma.is_perp:
            premium = vdiv((price - index) * WAD, index)
            # a trade's weight is its size against open interest (before or after, the larger)
            weight = w.smoothing * size // max(a.open_interest[m], b.open_interest[m], size)
            rate = ma.funding_rate + vdiv((premium - ma.funding_rate) * weight, WAD)
            rate = max(-w.max_funding, min(w.max_funding, rate))
            assert mb.funding_rate == rate, f"funding rate {mb.funding_rate} != {rate}"
            assert mb.funding_time == b.now
        else:
            assert mb == ma
        self._same_globals(a, b, markets=b.markets, open_interest=b.open_interest)

    def _after_liquidate(self, a, b, ctx, changed):
        i, liq, pre = ctx["account"], ctx["liquidator"], ctx["pre"]  # pre: after settling expired futures
        # 4. only a liquidatable account; health never lowered unless fully closed
        assert pre.equity < pre.mm, "liquidated a healthy account"
        if b.pos[i] and not self.w.closable(b, i):
            STATS["liquidate:left_expired_futures"] += 1  # closed all it could; the rest awaits settlement
            if b.summ[i].hf < pre.hf:
                STATS["liquidate:left_expired_futures_health_lowered"] += 1
        if self.w.closable(b, i):
            assert b.summ[i].hf >= pre.hf, f"liquidation lowered health {pre.hf} -> {b.summ[i].hf}"
            STATS["liquidate:partial"] += 1
            if b.summ[i].equity < b.summ[i].mm:
                STATS["liquidate:partial_still_liquidatable"] += 1
            if b.summ[i].hf < self.w.engine.liquidation_target():
                STATS["liquidate:partial_below_target"] += 1
        else:
            STATS["liquidate:closed_out"] += 1
        assert meets_im(b.summ[liq]), "liquidator below IM"
        events = [lg for lg in ctx["logs"] if type(lg).__name__ == "Liquidation"]
        assert len(events) == 1
        assert (events[0].health_before, events[0].health_after) == (pre.hf, b.summ[i].hf)
        if b.bad_debt > a.bad_debt:
            STATS["liquidate:bad_debt"] += 1
        if any(type(lg).__name__ == "CollateralLiquidated" for lg in ctx["logs"]):
            STATS["liquidate:collateral_sold"] += 1
        # collateral only moves between the two; custody unchanged
        for k in range(len(self.w.assets)):
            assert a.coll[i][k] + a.coll[liq][k] == b.coll[i][k] + b.coll[liq][k]
            assert b.coll[i][k] <= a.coll[i][k]
        self._same_globals(
            a, b, markets=b.markets, insurance=b.insurance, bad_debt=b.bad_debt, open_interest=b.open_interest
        )

    def _after_settle_market(self, a, b, ctx, changed):
        m = ctx["market"]
        ma, mb = a.markets[m], b.markets[m]
        if ma.settlement_price == 0:
            # the first round at or after expiry, whenever settlement is called
            assert mb.settlement_price == self.w.expiry_price(m, ma.expiry) != 0
            STATS["settled_market"] += 1
        assert mb._replace(settlement_price=0) == ma._replace(settlement_price=0)
        assert changed <= {m}
        for i in range(N_USERS):  # no requirement rises (equity moves to the settlement price)
            assert a.user(i) == b.user(i)
            assert b.summ[i].im <= a.summ[i].im and b.summ[i].mm <= a.summ[i].mm, f"settlement raised user {i}'s margin"
        self._same_globals(a, b, markets=b.markets)

    def _after_settle_positions(self, a, b, ctx, changed):
        (i,) = ctx["involved"]
        markets, cash, pos, post = ctx["expected"]
        assert b.markets == markets, "settle_positions settled other markets than the account's expired futures"
        assert (b.cash[i], b.coll[i], b.pos[i]) == (cash, a.coll[i], pos), "settle_positions"
        STATS["settled_position"] += len(a.pos[i]) - len(pos)
        assert b.summ[i] == post, f"settle_positions: contract {b.summ[i]} != mirror {post}"
        assert post.equity == a.summ[i].equity, "settling positions changed the account's equity"
        assert post.im <= a.summ[i].im and post.mm <= a.summ[i].mm, "settling positions raised a requirement"
        self._same_globals(a, b, open_interest=b.open_interest, markets=b.markets)


ProtocolMachine.TestCase.settings = SETTINGS


def test_protocol_invariants(_deployed):
    global _WORLD
    if _WORLD is None or _WORLD.p is not _deployed:
        _WORLD = World(_deployed)
    STATS.clear()
    t0 = time.time()
    run_state_machine_as_test(ProtocolMachine, settings=SETTINGS)
    if os.environ.get("INVARIANT_STATS"):
        print(f"\n{STATS['examples']} examples, {STATS['steps']} steps in {time.time() - t0:.1f} s")
        for k, v in sorted(STATS.items()):
            print(f"  {k}: {v}")


def test_settle_market_never_raises_requirements(protocol):
    """Invariant 3 for `settle_market`, on the counterexample the stateful test found at commit
    9f959b1: a basis trade (long perpetual, short future) meeting IM on its 2% spread charge
    became liquidatable (health 2.5 -> 0.5) the moment anyone settled the future, with no
    price move. Since 28b8048 the future's netting credit fades over its last week, so the
    requirement rises with time before expiry and settlement itself never raises it."""
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 25_000)
    p.deposit_usd(b, 1_000_000)
    p.trade(a, b, "ETH-PERP", 100 * WAD, 2000 * WAD)  # a long 100 ETH perpetual
    p.trade(b, a, "ETH-FUT", 100 * WAD, 2000 * WAD)  # a short 100 ETH future: offset, 2% spread IM
    with boa.env.prank(a.address):
        p.vault.withdraw(p.usdc.address, 20_000 * 10**6)  # equity 5,000 >= IM 4,000
    assert p.engine.meets_initial_margin(a.address)
    expiry = p.deployment.market_expiries["ETH-FUT"]
    ims = []
    for when in (expiry - 8 * DAY, expiry - 7 * DAY // 2, expiry):
        boa.env.time_travel(seconds=when - boa.env.evm.patch.timestamp)
        p.set_price("ETH", 2000)  # same price, refreshed (heartbeat)
        p.set_price("BTC", 30000)
        ims.append(p.engine.margin_summary(a.address))
    assert ims[0].initial_margin < ims[1].initial_margin < ims[2].initial_margin  # rises with time
    p.engine.settle_market(p.deployment.markets["ETH-FUT"])  # anyone may call; price unchanged
    after = p.engine.margin_summary(a.address)
    assert after.equity == ims[2].equity == 5_000 * WAD
    assert after.initial_margin <= ims[2].initial_margin
    assert after.maintenance_margin <= ims[2].maintenance_margin


def test_withdraw_of_realized_profit_waits_for_liquidity(protocol):
    """Two accounts margined only with WETH trade; the price moves; both close. The winner holds
    +10,000 cash owed by the loser, whose debt is backed by WETH: the vault holds no USDC yet, so
    the withdrawal reverts with a clear reason (a liquidity limit, not a loss) and succeeds once
    the loser repays."""
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit(a, "WETH", 100 * WAD)
    p.deposit(b, "WETH", 100 * WAD)
    p.trade(a, b, "ETH-PERP", 50 * WAD, 2000 * WAD)  # a long, b short
    p.set_price("ETH", 2200)
    p.trade(b, a, "ETH-PERP", 50 * WAD, 2200 * WAD)  # both close: a +10,000, b -10,000 (healthy: 100 WETH)
    assert p.vault.cash(a.address) == 10_000 * WAD and p.vault.cash(b.address) == -10_000 * WAD
    assert p.engine.meets_initial_margin(a.address) and not p.engine.is_liquidatable(b.address)
    assert p.usdc.balanceOf(p.vault.address) == 0
    with boa.env.prank(a.address), boa.reverts("vault: settlement liquidity short"):
        p.vault.withdraw(p.usdc.address, 10_000 * 10**6)
    p.deposit_usd(b, 10_000)  # the loser repays its debt in USDC
    with boa.env.prank(a.address):
        p.vault.withdraw(p.usdc.address, 10_000 * 10**6)
    assert p.usdc.balanceOf(a.address) == 10_000 * 10**6
    assert p.vault.cash(b.address) == 0


def test_liquidation_past_expiry_keeps_health(protocol):
    """Minimal reproduction (exempted in the stateful test, which counts it as
    `liquidate:left_expired_futures_health_lowered`)."""
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 25_000)
    p.deposit_usd(b, 1_000_000)
    p.trade(a, b, "ETH-PERP", 100 * WAD, 2000 * WAD)  # a long 100 ETH perpetual
    p.trade(b, a, "ETH-FUT", 100 * WAD, 2000 * WAD)  # a short 100 ETH future: hedged
    with boa.env.prank(a.address):
        p.vault.withdraw(p.usdc.address, 20_000 * 10**6)  # equity 5,000
    boa.env.time_travel(seconds=p.deployment.market_expiries["ETH-FUT"] + 3600 - boa.env.evm.patch.timestamp)
    p.set_price("ETH", 2000)  # unchanged, refreshed; the future is expired but not settled
    p.set_price("BTC", 30000)
    before = p.engine.margin_summary(a.address)
    assert p.engine.is_liquidatable(a.address)  # MM 20,000: both legs charged alone after expiry
    with boa.env.prank(b.address):
        p.engine.liquidate(a.address)
    after = p.engine.margin_summary(a.address)
    assert p.lens.account_states([a.address])[0].positions  # the expired future is still open
    assert after.health_factor >= before.health_factor, f"health {before.health_factor} -> {after.health_factor}"
