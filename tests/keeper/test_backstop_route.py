"""Routing liquidations through the backstop vault (settings `liquidation.route`): the vault's
simulated fee is the reward, a reverting simulation falls back to the engine with one INFO line
per account, `direct` never asks the vault, and a confirmed liquidation is counted by route from
the contract its transaction called (the engine's Liquidation event, whoever called the engine)."""

from __future__ import annotations

import logging

import pytest
from web3.exceptions import ContractLogicError

from keeper.bot import Liquidator, liquidation_key
from keeper.chain.client import LiquidationTerms
from keeper.chain.follower import BlockRef
from keeper.metrics import KeeperMetrics
from keeper.settings import SettingsError, load_settings
from keeper.txmanager import Outcome

WAD = 10**18
GWEI = 10**9
ENGINE = "0x" + "e0" * 20
VAULT = "0x" + "b0" * 20
HEAD = BlockRef(10, "0x01", "0x00", 1000, base_fee=1 * GWEI)
ETH = 2_000 * WAD


class Call:
    def __init__(self, name, value, gas=400_000, revert=None):
        self.fn_name, self.value, self.gas, self.revert = name, value, gas, revert

    def call(self, *a, **k):
        if self.revert:
            raise ContractLogicError(f"execution reverted: {self.revert}", data="0x")
        return self.value

    def estimate_gas(self, *a, **k):
        return self.gas


class Tx:
    address = "0x" + "aa" * 20

    def __init__(self):
        self.sent = []
        self.gas = []

    def send(self, call, gas, key):
        self.sent.append((call.fn_name, key))
        self.gas.append(gas)
        return "0x" + "ab" * 32


class Events:
    """process_receipt returns the receipt's `events` that carry this event's name."""

    def __init__(self, name):
        self.name = name

    def __call__(self):
        return self

    def process_receipt(self, receipt, errors=None):
        return [e for e in receipt["events"] if e["event"] == self.name]


def contract(address, functions, events=()):
    c = type("C", (), {})()
    c.address = address
    c.functions = type("F", (), functions)()
    c.events = type("Ev", (), {name: Events(name) for name in events})()
    return c


class Client:
    def __init__(self, direct: Call, routed: Call | None):
        self.direct, self.routed = direct, routed
        self.engine = contract(ENGINE, {"liquidate": lambda _s, a: direct}, ("Liquidation",))
        self.backstop = None if routed is None else contract(VAULT, {"liquidate": lambda _s, a: routed})
        self.deployment = type("D", (), {"settlement_decimals": 6})()

    def liquidatable_since(self, account, block):
        return 0


def bot(direct: Call, routed: Call | None, **kw) -> tuple[Liquidator, Tx]:
    tx = Tx()
    b = Liquidator(Client(direct, routed), tx, index=None, follower=None, metrics=KeeperMetrics(), **kw)
    b._terms = LiquidationTerms(2 * 10**16, 2 * 10**16, 3600, WAD // 2)
    return b, tx


def direct_call(notional_usd=100_000):
    return Call("MarginEngine.liquidate", notional_usd * WAD)


def test_route_setting_defaults_to_backstop_and_is_checked(tmp_path):
    assert load_settings(env={}).liquidation.route == "backstop"
    assert load_settings(env={"KEEPER_LIQUIDATION_ROUTE": "direct"}).liquidation.route == "direct"
    f = tmp_path / "k.yaml"
    f.write_text("liquidation: {route: Direct}\n")
    assert load_settings(f, env={}).liquidation.route == "direct"
    f.write_text("liquidation: {route: vault}\n")
    with pytest.raises(SettingsError, match=r"liquidation.route: must be backstop or direct, got 'vault'"):
        load_settings(f, env={})


def test_routed_through_the_vault_when_it_can_take_it():
    # the vault pays a $150 fee (150e6 USDC units): that is the reward; gas $3.20
    b, tx = bot(direct_call(), Call("BackstopVault.liquidate", 150 * 10**6))
    b._liquidate("0xA", 50_000 * WAD, HEAD, ETH)
    assert tx.sent == [("BackstopVault.liquidate", liquidation_key("0xA"))]
    # a keeper that liquidates all sends any positive fee through the vault
    b, tx = bot(direct_call(), Call("BackstopVault.liquidate", 1), min_profit_usd=None)
    b._liquidate("0xA", 50_000 * WAD, HEAD, ETH)
    assert tx.sent == [("BackstopVault.liquidate", liquidation_key("0xA"))]


def test_a_fee_below_the_gas_goes_direct_and_is_judged_there(caplog):
    # $2 fee < gas 400k x 3 gwei x $2,000 x 1.25 = $3.00: the direct reward ($1,000) pays it
    b, tx = bot(direct_call(), Call("BackstopVault.liquidate", 2 * 10**6))
    with caplog.at_level(logging.INFO, logger="keeper.bot"):
        b._liquidate("0xA", 50_000 * WAD, HEAD, ETH)
    assert tx.sent == [("MarginEngine.liquidate", "liquidate:0xA")]
    assert "backstop vault cannot take 0xA (its fee 2.00 USD does not exceed gas" in caplog.text
    # neither pays: skipped as unprofitable, by the direct reward ($100 closed: $1)
    b, tx = bot(direct_call(100), Call("BackstopVault.liquidate", 2 * 10**6))
    b._liquidate("0xA", 50_000 * WAD, HEAD, ETH)
    assert tx.sent == [] and b.metrics.value("keeper_liquidations_skipped_total", reason="unprofitable") == 1


def test_a_bankrupt_account_is_still_routed_when_every_liquidation_is_sent():
    # no equity left: the vault's fee is 0 and so is a direct liquidator's penalty share; a keeper
    # that liquidates all routes it, and takes no positions
    b, tx = bot(direct_call(), Call("BackstopVault.liquidate", 0), min_profit_usd=None)
    b._liquidate("0xA", -5 * WAD, HEAD, ETH)
    assert tx.sent == [("BackstopVault.liquidate", "liquidate:0xA")]


@pytest.mark.parametrize("reason", ["backstop: full", "engine: liquidator below IM"])
def test_a_vault_that_cannot_take_it_falls_back_to_direct_logged_once(caplog, reason):
    b, tx = bot(direct_call(), Call("BackstopVault.liquidate", 0, revert=reason))
    b._track_episodes(["0xA"], 10)
    with caplog.at_level(logging.INFO, logger="keeper.bot"):
        b._liquidate("0xA", 50_000 * WAD, HEAD, ETH)
        b._liquidate("0xA", 50_000 * WAD, BlockRef(11, "0x02", "0x01", 1012, base_fee=GWEI), ETH)
    assert tx.sent == [("MarginEngine.liquidate", "liquidate:0xA")] * 2
    lines = [r.getMessage() for r in caplog.records if "cannot take" in r.getMessage()]
    assert lines == [
        f"backstop vault cannot take 0xA (execution reverted: {reason}); "
        "liquidating it directly (the keeper takes the positions)"
    ]
    b._track_episodes([], 12)  # the episode ends: a new one logs again
    with caplog.at_level(logging.INFO, logger="keeper.bot"):
        b._liquidate("0xA", 50_000 * WAD, HEAD, ETH)
    assert sum("cannot take" in r.getMessage() for r in caplog.records) == 2


def test_direct_route_and_no_vault_never_ask_the_vault():
    routed = Call("BackstopVault.liquidate", 0, revert="must not be called")
    for b, tx in (bot(direct_call(), routed, route="direct"), bot(direct_call(), None)):
        b._liquidate("0xA", 50_000 * WAD, HEAD, ETH)
        assert tx.sent == [("MarginEngine.liquidate", "liquidate:0xA")]


def test_later_routed_sends_of_a_block_get_more_gas():
    """Each routed liquidation sent earlier in the block may grow the vault's book that a later
    one reads: the k-th of a block is sent with k x ROUTED_GAS_STEP above its estimate; a direct
    one and the first of the next block are not."""
    from keeper.bot import ROUTED_GAS_STEP

    b, tx = bot(direct_call(), Call("BackstopVault.liquidate", 150 * 10**6, gas=340_000))
    for account in ("0xA", "0xB", "0xC"):
        b._liquidate(account, 50_000 * WAD, HEAD, ETH)
    b._liquidate("0xD", 50_000 * WAD, BlockRef(11, "0x02", "0x01", 1012, base_fee=GWEI), ETH)
    assert tx.gas == [340_000, 340_000 + ROUTED_GAS_STEP, 340_000 + 2 * ROUTED_GAS_STEP, 340_000]
    b, tx = bot(direct_call(), None)
    for account in ("0xA", "0xB"):
        b._liquidate(account, 50_000 * WAD, HEAD, ETH)
    assert tx.gas == [400_000, 400_000]


def test_position_opened_this_block_waits_instead_of_falling_back():
    b, tx = bot(direct_call(), Call("BackstopVault.liquidate", 0, revert="engine: position opened this block"))
    b._liquidate("0xA", 50_000 * WAD, HEAD, ETH)
    assert tx.sent == [] and b.metrics.value("keeper_liquidations_skipped_total", reason="opened_this_block") == 1


def receipt(to, emitter, account="0xA"):
    return {
        "status": 1,
        "to": to,
        "blockNumber": 11,
        "gasUsed": 0,
        "effectiveGasPrice": 0,
        "events": [{"event": "Liquidation", "address": emitter, "args": {"account": account, "liquidator": to}}],
    }


def test_confirmed_liquidations_are_counted_by_route():
    b, _ = bot(direct_call(), Call("BackstopVault.liquidate", 0))
    b._handle_outcomes([Outcome("liquidate:0xA", "0x01", "mined", receipt(VAULT, ENGINE))], 11)
    b._handle_outcomes([Outcome("liquidate:0xB", "0x02", "mined", receipt(ENGINE, ENGINE, "0xB"))], 11)
    assert b.stats.succeeded == 2 and b.stats.routed == 1
    assert b.metrics.value("keeper_liquidations_by_route_total", route="backstop") == 1
    assert b.metrics.value("keeper_liquidations_by_route_total", route="direct") == 1


def test_a_liquidation_event_from_another_contract_is_not_a_liquidation():
    b, _ = bot(direct_call(), Call("BackstopVault.liquidate", 0))
    b._handle_outcomes([Outcome("liquidate:0xA", "0x01", "mined", receipt(VAULT, VAULT))], 11)
    assert b.stats.succeeded == 0 and b.stats.failed == 1
