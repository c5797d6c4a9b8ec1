"""`keeper dev accounts`' book (keeper.dev_cli.varied_specs): every kind in turn, and with
options an option book on every other account without changing the others."""

from __future__ import annotations

from keeper.dev_cli import OPTION_ORDER, varied_specs
from keeper.replay.population import KIND_WEIGHTS, OPTION_KINDS

PRICES = {"ETH": 2000.0, "BTC": 30000.0}


def test_option_order_names_every_option_kind_once():
    assert sorted(OPTION_ORDER) == sorted(OPTION_KINDS)


def test_options_take_every_other_account_and_keep_the_perpetual_book():
    plain = varied_specs(7, PRICES, 23, "USDC")
    mixed = varied_specs(7, PRICES, 23, "USDC", options=True)
    assert [s.kind for s in plain] == [*KIND_WEIGHTS, "long"]
    assert [s.kind for s in mixed] == ["long", "call_spread", "short", "put_spread", "future", "covered_call", "basis"]
    assert mixed[0::2] == plain[:4]  # the same perpetual/future accounts as without options
    assert all(s.options for s in mixed[1::2]) and not any(s.options for s in mixed[0::2])
    # calls and puts, long and short, in the first three books
    legs = {(is_call, units > 0) for s in mixed[1:6:2] for _, is_call, _, units in s.options}
    assert legs == {(True, True), (True, False), (False, True), (False, False)}


def test_a_smaller_book_is_a_prefix():
    assert varied_specs(3, PRICES, 23, "USDC", options=True) == varied_specs(6, PRICES, 23, "USDC", options=True)[:3]
