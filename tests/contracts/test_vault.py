"""CollateralVault: custody, exact unit conversion, caps, margin-checked withdrawals, odd tokens,
engine-only ledger moves, insurance fund and collateral valuation."""

from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import WAD, deploy_unique, deployer, events, source_deployer

USDC_SCALE = 10**12
WETH_ID, WBTC_ID = 0, 1
HAIRCUT = 85 * 10**16


def fund_user(p, symbol: str, amount: int):
    user = p.new_user()
    p.deposit(user, symbol, amount)
    return user


def no_return_token(decimals: int):
    return deploy_unique(source_deployer("mocks/NoReturnToken.vy"), decimals)


# ------------------------------------------------------------------ wiring / views


def test_vault_wiring(protocol):
    p = protocol
    v = p.vault
    assert v.SETTLEMENT_TOKEN() == p.usdc.address
    assert v.SETTLEMENT_SCALE() == USDC_SCALE
    assert v.ORACLE() == p.oracle.address
    assert v.engine() == p.engine.address
    assert v.asset_count() == 2
    weth = v.assets(WETH_ID)
    assert (weth.token, weth.decimals, weth.price_id, weth.haircut, weth.deposit_cap, weth.total) == (
        p.tokens["WETH"].address,
        18,
        0,
        HAIRCUT,
        10_000_000 * 10**18,
        0,
    )
    wbtc = v.assets(WBTC_ID)
    assert (wbtc.token, wbtc.decimals, wbtc.price_id, wbtc.haircut, wbtc.deposit_cap) == (
        p.tokens["WBTC"].address,
        8,
        1,
        HAIRCUT,
        1_000_000 * 10**8,
    )
    assert v.asset_id_of(p.tokens["WETH"].address) == WETH_ID
    assert v.asset_id_of(p.tokens["WBTC"].address) == WBTC_ID
    with boa.reverts("vault: unknown asset"):
        v.asset_id_of(p.usdc.address)
    assert v.insurance_fund() == 0 and v.bad_debt() == 0 and v.settlement_total() == 0


# ------------------------------------------------------------------ deposits / withdrawals, exact units


def test_usdc_deposit_and_withdraw_exact(protocol):
    p = protocol
    v, usdc = p.vault, p.usdc
    a = fund_user(p, "USDC", 1)
    (ev,) = events(v, "Deposit")
    assert v.cash(a.address) == 10**12
    assert (ev.account, ev.sender, ev.token, ev.amount, ev.credited_wad) == (
        a.address,
        a.address,
        usdc.address,
        1,
        10**12,
    )
    p.deposit(a, "USDC", 123_456_789)
    assert v.cash(a.address) == 123_456_790 * 10**12
    assert v.settlement_total() == 123_456_790
    assert usdc.balanceOf(v.address) == 123_456_790
    assert usdc.balanceOf(a.address) == 0
    with boa.env.prank(a.address):
        v.withdraw(usdc.address, 1)
        (w,) = events(v, "Withdraw")
        assert (w.account, w.receiver, w.token, w.amount) == (a.address, a.address, usdc.address, 1)
        assert v.cash(a.address) == 123_456_789 * 10**12
        assert usdc.balanceOf(a.address) == 1
        # to another receiver
        other = p.new_user().address
        v.withdraw_to(usdc.address, 123_456_789, other)
        (w,) = events(v, "Withdraw")
        assert (w.account, w.receiver, w.amount) == (a.address, other, 123_456_789)
    assert usdc.balanceOf(other) == 123_456_789
    assert v.cash(a.address) == 0
    assert v.settlement_total() == 0
    assert usdc.balanceOf(v.address) == 0


@pytest.mark.parametrize("symbol,asset_id,decimals", [("WETH", WETH_ID, 18), ("WBTC", WBTC_ID, 8)])
def test_collateral_deposit_and_withdraw_exact(protocol, symbol, asset_id, decimals):
    p = protocol
    v, token = p.vault, p.tokens[symbol]
    a = fund_user(p, symbol, 1)
    (ev,) = events(v, "Deposit")
    assert v.balances(a.address, asset_id) == 1
    assert (ev.account, ev.token, ev.amount, ev.credited_wad) == (a.address, token.address, 1, 0)
    amount = 3 * 10**decimals + 7  # 3 whole tokens and 7 base units
    p.deposit(a, symbol, amount)
    assert v.balances(a.address, asset_id) == amount + 1
    assert v.assets(asset_id).total == amount + 1
    assert v.cash(a.address) == 0  # collateral is not cash
    assert v.has_collateral(a.address)
    balances = [0, 0]
    balances[asset_id] = amount + 1
    assert v.collateral_balances(a.address) == balances
    with boa.env.prank(a.address):
        v.withdraw(token.address, amount)
    (w,) = events(v, "Withdraw")
    assert (w.token, w.amount) == (token.address, amount)
    assert token.balanceOf(a.address) == amount
    assert v.balances(a.address, asset_id) == 1
    assert v.assets(asset_id).total == 1
    assert token.balanceOf(v.address) == 1
    with boa.env.prank(a.address):
        with boa.reverts("vault: insufficient collateral"):
            v.withdraw(token.address, 2)
        v.withdraw(token.address, 1)
    assert not v.has_collateral(a.address)
    assert v.collateral_balances(a.address) == [0, 0]


def test_deposit_for_another_account(protocol):
    p = protocol
    v, usdc, weth = p.vault, p.usdc, p.tokens["WETH"]
    payer, beneficiary = p.new_user(), p.new_user()
    usdc.mint(payer.address, 500 * 10**6)
    weth.mint(payer.address, 2 * WAD)
    with boa.env.prank(payer.address):
        usdc.approve(v.address, 500 * 10**6)
        weth.approve(v.address, 2 * WAD)
        v.deposit_for(usdc.address, 500 * 10**6, beneficiary.address)
        (ev,) = events(v, "Deposit")
        assert (ev.account, ev.sender) == (beneficiary.address, payer.address)
        v.deposit_for(weth.address, 2 * WAD, beneficiary.address)
        with boa.reverts("vault: zero account"):
            v.deposit_for(usdc.address, 1, "0x0000000000000000000000000000000000000000")
    assert v.cash(beneficiary.address) == 500 * WAD
    assert v.cash(payer.address) == 0
    assert v.balances(beneficiary.address, WETH_ID) == 2 * WAD
    assert v.balances(payer.address, WETH_ID) == 0
    # only the beneficiary can withdraw it
    with boa.env.prank(payer.address):
        with boa.reverts("vault: insufficient cash"):
            v.withdraw(usdc.address, 1)
    with boa.env.prank(beneficiary.address):
        v.withdraw(usdc.address, 500 * 10**6)
    assert usdc.balanceOf(beneficiary.address) == 500 * 10**6


def test_deposit_cap(protocol):
    p = protocol
    v = p.vault
    v.set_asset_params(WETH_ID, HAIRCUT, 5 * WAD)
    (ev,) = events(v, "AssetParamsSet")
    assert (ev.asset_id, ev.haircut, ev.deposit_cap) == (WETH_ID, HAIRCUT, 5 * WAD)
    a, b = p.new_user(), p.new_user()
    p.deposit(a, "WETH", 3 * WAD)
    p.deposit(b, "WETH", 2 * WAD)  # exactly at the cap, across accounts
    assert v.assets(WETH_ID).total == 5 * WAD
    with boa.reverts("vault: deposit cap exceeded"):
        p.deposit(a, "WETH", 1)
    # lowering the cap below deposits stops new ones, withdrawals still work
    v.set_asset_params(WETH_ID, HAIRCUT, 1 * WAD)
    with boa.env.prank(a.address):
        v.withdraw(p.tokens["WETH"].address, 3 * WAD)
    assert v.assets(WETH_ID).total == 2 * WAD
    with boa.reverts("vault: deposit cap exceeded"):
        p.deposit(a, "WETH", 1)
    # the settlement token has no cap
    p.deposit(a, "USDC", 10**15)
    assert v.cash(a.address) == 10**27


def test_unknown_asset_and_zero_amount(protocol):
    p = protocol
    v = p.vault
    stray = deploy_unique(deployer("MockERC20"), "Stray", "STR", 18)
    a = p.new_user()
    stray.mint(a.address, WAD)
    with boa.env.prank(a.address):
        stray.approve(v.address, WAD)
        with boa.reverts("vault: unknown asset"):
            v.deposit(stray.address, WAD)
        with boa.reverts("vault: unknown asset"):
            v.withdraw(stray.address, WAD)
        with boa.reverts("vault: zero amount"):
            v.deposit(p.usdc.address, 0)
        with boa.reverts("vault: zero amount"):
            v.deposit(p.tokens["WETH"].address, 0)
        with boa.reverts("vault: zero amount"):
            v.withdraw(p.usdc.address, 0)
        with boa.reverts("vault: zero amount"):
            v.fund_insurance(0)
    assert stray.balanceOf(a.address) == WAD


def test_withdraw_more_than_cash(protocol):
    p = protocol
    v = p.vault
    a = fund_user(p, "USDC", 100 * 10**6)
    with boa.env.prank(a.address):
        with boa.reverts("vault: insufficient cash"):
            v.withdraw(p.usdc.address, 100 * 10**6 + 1)
        v.withdraw(p.usdc.address, 100 * 10**6)
    assert v.cash(a.address) == 0


# ------------------------------------------------------------------ margin-checked withdrawals


def test_withdraw_below_initial_margin(protocol):
    p = protocol
    v, usdc = p.vault, p.usdc
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 1_000)
    p.deposit_usd(b, 100_000)
    p.trade(a, b, "ETH-PERP", 4 * WAD, 2000 * WAD)
    # IM = 4 * 2000 * 10% = 800; equity 1000
    assert p.initial_margin(a.address) == 800 * WAD
    with boa.env.prank(a.address):
        v.withdraw(usdc.address, 200 * 10**6)  # equity 800 == IM: allowed
        assert p.equity(a.address) == 800 * WAD
        with boa.reverts("vault: below initial margin"):
            v.withdraw(usdc.address, 1)
    assert v.cash(a.address) == 800 * WAD


def test_withdraw_collateral_below_initial_margin(protocol):
    p = protocol
    v, weth = p.vault, p.tokens["WETH"]
    a, b = p.new_user(), p.new_user()
    p.deposit(a, "WETH", WAD)  # worth 2000 * 0.85 = 1700 of margin
    p.deposit_usd(b, 100_000)
    p.trade(a, b, "ETH-PERP", 5 * WAD, 2000 * WAD)  # IM 1000
    with boa.env.prank(a.address):
        v.withdraw(weth.address, 4 * 10**17)  # 0.6 WETH left: 1020 >= 1000
        assert p.equity(a.address) == 1020 * WAD
        with boa.reverts("vault: below initial margin"):
            v.withdraw(weth.address, 2 * 10**16)  # 0.58 WETH: 986 < 1000
    assert v.balances(a.address, WETH_ID) == 6 * 10**17


def test_unrealized_profit_is_not_withdrawable_cash(protocol):
    p = protocol
    v, usdc = p.vault, p.usdc
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 1_000)
    p.deposit_usd(b, 100_000)
    p.trade(a, b, "ETH-PERP", 1 * WAD, 2000 * WAD)
    p.set_price("ETH", 2500)
    assert p.equity(a.address) == 1500 * WAD
    with boa.env.prank(a.address):
        v.withdraw(usdc.address, 1_000 * 10**6)
        # equity 500 >= IM 250, but the profit is unrealized: no cash to withdraw
        assert p.equity(a.address) == 500 * WAD
        assert p.initial_margin(a.address) == 250 * WAD
        with boa.reverts("vault: insufficient cash"):
            v.withdraw(usdc.address, 1)
    # realize it: close at 2500, then it is cash
    p.trade(b, a, "ETH-PERP", 1 * WAD, 2500 * WAD)
    assert v.cash(a.address) == 500 * WAD
    with boa.env.prank(a.address):
        v.withdraw(usdc.address, 500 * 10**6)
    assert usdc.balanceOf(a.address) == 1_500 * 10**6


# ------------------------------------------------------------------ odd tokens


def test_fee_on_transfer_collateral_credits_what_arrived(protocol):
    p = protocol
    v = p.vault
    fee = deploy_unique(deployer("MockERC20"), "Fee token", "FEE", 18)
    asset_id = v.list_asset(fee.address, 0, 8 * 10**17, 10**6 * WAD)
    assert asset_id == 2
    (ev,) = events(v, "AssetListed")
    assert (ev.asset_id, ev.token, ev.price_id, ev.haircut, ev.deposit_cap) == (
        2,
        fee.address,
        0,
        8 * 10**17,
        10**6 * WAD,
    )
    fee.set_fee(100)  # 1%
    a = p.new_user()
    fee.mint(a.address, 1000 * WAD)
    with boa.env.prank(a.address):
        fee.approve(v.address, 1000 * WAD)
        v.deposit(fee.address, 1000 * WAD)
        (ev,) = events(v, "Deposit")
        assert ev.amount == 990 * WAD
        assert v.balances(a.address, 2) == 990 * WAD
        assert v.assets(2).total == 990 * WAD
        assert fee.balanceOf(v.address) == 990 * WAD
        # valued on what arrived: 990 * 2000 * 0.8
        assert v.collateral_value(a.address) == 990 * 2000 * 8 * WAD // 10
        v.withdraw(fee.address, 990 * WAD)
    assert v.balances(a.address, 2) == 0
    assert fee.balanceOf(v.address) == 0
    assert fee.balanceOf(a.address) == 990 * WAD * 99 // 100  # the token's own fee on the way out


def test_fee_on_transfer_settlement_token_credits_what_arrived(protocol):
    p = protocol
    feeusd = deploy_unique(deployer("MockERC20"), "Fee USD", "FUSD", 6)
    vault = deploy_unique(deployer("CollateralVault"), p.admin, feeusd.address, p.oracle.address)
    assert vault.SETTLEMENT_SCALE() == 10**12
    feeusd.set_fee(50)  # 0.5%
    a = p.new_user()
    feeusd.mint(a.address, 3_000_000)
    with boa.env.prank(a.address):
        feeusd.approve(vault.address, 3_000_000)
        vault.deposit(feeusd.address, 2_000_000)
        (ev,) = events(vault, "Deposit")
        assert (ev.amount, ev.credited_wad) == (1_990_000, 1_990_000 * 10**12)
        vault.fund_insurance(1_000_000)
        (ev,) = events(vault, "InsuranceFunded")
        assert ev.amount == 995_000 * 10**12
    assert vault.cash(a.address) == 1_990_000 * 10**12
    assert vault.insurance_fund() == 995_000 * 10**12
    assert vault.settlement_total() == 1_990_000 + 995_000 == feeusd.balanceOf(vault.address)


def test_no_return_token_deposit_and_withdraw(protocol):
    p = protocol
    v = p.vault
    nrt = no_return_token(8)
    asset_id = v.list_asset(nrt.address, 1, 9 * 10**17, 10**20)
    a = p.new_user()
    nrt.mint(a.address, 5 * 10**8)
    with boa.env.prank(a.address):
        nrt.approve(v.address, 5 * 10**8)
        v.deposit(nrt.address, 5 * 10**8)
        assert v.balances(a.address, asset_id) == 5 * 10**8
        assert nrt.balanceOf(v.address) == 5 * 10**8
        v.withdraw(nrt.address, 2 * 10**8)
    assert nrt.balanceOf(a.address) == 2 * 10**8
    assert nrt.balanceOf(v.address) == 3 * 10**8
    assert v.balances(a.address, asset_id) == 3 * 10**8
    assert v.collateral_value(a.address) == 3 * 30000 * 9 * WAD // 10


def test_no_return_settlement_token(protocol):
    p = protocol
    nrt = no_return_token(6)
    vault = deploy_unique(deployer("CollateralVault"), p.admin, nrt.address, p.oracle.address)
    # any engine works for the margin check of an account with no positions
    vault.set_engine(p.engine.address)
    a = p.new_user()
    nrt.mint(a.address, 7_000_000)
    with boa.env.prank(a.address):
        nrt.approve(vault.address, 7_000_000)
        vault.deposit(nrt.address, 7_000_000)
        assert vault.cash(a.address) == 7 * WAD
        vault.withdraw(nrt.address, 2_500_000)
    assert vault.cash(a.address) == 4_500_000 * 10**12
    assert nrt.balanceOf(a.address) == 2_500_000
    assert nrt.balanceOf(vault.address) == 4_500_000


def test_tokens_sent_directly_are_ignored(protocol):
    p = protocol
    v, usdc, weth = p.vault, p.usdc, p.tokens["WETH"]
    a = fund_user(p, "USDC", 10 * 10**6)
    p.deposit(a, "WETH", WAD)
    usdc.mint(v.address, 1_000 * 10**6)  # donation
    weth.mint(a.address, 5 * WAD)
    with boa.env.prank(a.address):
        weth.transfer(v.address, 5 * WAD)  # straight transfer, no deposit
    assert v.cash(a.address) == 10 * WAD
    assert v.balances(a.address, WETH_ID) == WAD
    assert v.assets(WETH_ID).total == WAD
    assert v.settlement_total() == 10 * 10**6
    assert v.insurance_fund() == 0
    # the next deposit credits only its own amount (balance difference)
    p.deposit(a, "USDC", 3 * 10**6)
    p.deposit(a, "WETH", 2 * WAD)
    assert v.cash(a.address) == 13 * WAD
    assert v.balances(a.address, WETH_ID) == 3 * WAD
    assert v.settlement_total() == 13 * 10**6
    assert usdc.balanceOf(v.address) == 1_013 * 10**6
    # withdrawing everything leaves the donation in the vault, unowned
    with boa.env.prank(a.address):
        v.withdraw(usdc.address, 13 * 10**6)
        with boa.reverts("vault: insufficient cash"):
            v.withdraw(usdc.address, 1)
    assert usdc.balanceOf(v.address) == 1_000 * 10**6


# ------------------------------------------------------------------ insurance fund


def test_fund_insurance(protocol):
    p = protocol
    v, usdc = p.vault, p.usdc
    sponsor = p.new_user()
    usdc.mint(sponsor.address, 2_500 * 10**6 + 1)
    with boa.env.prank(sponsor.address):
        usdc.approve(v.address, 2_500 * 10**6 + 1)
        v.fund_insurance(2_500 * 10**6)
        (ev,) = events(v, "InsuranceFunded")
        assert (ev.sender, ev.amount) == (sponsor.address, 2_500 * WAD)
        v.fund_insurance(1)
    assert v.insurance_fund() == 2_500 * WAD + 10**12
    assert v.settlement_total() == 2_500 * 10**6 + 1
    assert v.cash(sponsor.address) == 0  # funding is not a deposit
    assert usdc.balanceOf(v.address) == 2_500 * 10**6 + 1


# ------------------------------------------------------------------ engine only


def test_engine_only_functions(protocol):
    p = protocol
    v = p.vault
    a = p.new_user().address
    for caller in (a, p.admin):
        with boa.env.prank(caller):
            with boa.reverts("vault: not engine"):
                v.settle_cash(a, 1)
            with boa.reverts("vault: not engine"):
                v.charge_penalty(a, caller, 2, 1)
            with boa.reverts("vault: not engine"):
                v.liquidate_collateral(a, caller, [2000 * WAD, 30000 * WAD], 0)
            with boa.reverts("vault: not engine"):
                v.cover_deficit(a)


def test_engine_ledger_moves(protocol):
    """The engine-only primitives, called directly as the engine."""
    p = protocol
    v = p.vault
    a, liq = p.new_user(), p.new_user()
    p.deposit(a, "WETH", 2 * WAD)
    with boa.env.prank(p.engine.address):
        v.settle_cash(a.address, -300 * WAD)
        (ev,) = events(v, "CashSettled")
        assert (ev.account, ev.delta) == (a.address, -300 * WAD)
        assert v.cash(a.address) == -300 * WAD
        with boa.reverts("vault: share above penalty"):
            v.charge_penalty(a.address, liq.address, 10, 11)
        v.charge_penalty(a.address, liq.address, 10 * WAD + 1, 5 * WAD)
        assert v.cash(a.address) == -310 * WAD - 1
        assert v.cash(liq.address) == 5 * WAD
        assert v.insurance_fund() == 5 * WAD + 1
        # sale at 200 less min(penalty 5%, (1 - 0.85) / 2 = 7.5%) = 190 a WETH until cash >= 0:
        # ceil(310.000...001 / 190) = 1.631578947368421053 WETH
        assert v.liquidate_collateral(a.address, liq.address, [200 * WAD, 30000 * WAD], 5 * 10**16)
        sold = (310 * WAD + 1) * WAD // (190 * WAD) + 1
        payment = sold * 190 * WAD // WAD
        ev = events(v, "CollateralLiquidated")[0]
        assert (ev.account, ev.liquidator, ev.asset_id, ev.amount, ev.payment) == (
            a.address,
            liq.address,
            WETH_ID,
            sold,
            payment,
        )
        assert v.balances(a.address, WETH_ID) == 2 * WAD - sold
        assert v.balances(liq.address, WETH_ID) == sold
        assert v.cash(liq.address) == 5 * WAD - payment
        assert v.cash(a.address) == -310 * WAD - 1 + payment >= 0
        # nothing left to sell for: a second call sells nothing
        assert not v.liquidate_collateral(a.address, liq.address, [200 * WAD, 30000 * WAD], 5 * 10**16)
        v.settle_cash(a.address, -(v.cash(a.address) + 110 * WAD + 1))
        assert v.cash(a.address) == -110 * WAD - 1
        # non-negative cash: nothing to cover
        assert v.cover_deficit(p.new_user().address) == (0, 0)
        # the fund pays what it can, the rest is bad debt; the fund stops at zero
        assert v.cover_deficit(a.address) == (5 * WAD + 1, 105 * WAD)
        ev = events(v, "DeficitCovered")[0]
        assert (ev.account, ev.from_insurance, ev.bad_debt) == (a.address, 5 * WAD + 1, 105 * WAD)
    assert v.cash(a.address) == 0
    assert v.insurance_fund() == 0
    assert v.bad_debt() == 105 * WAD


def test_cover_deficit_fully_from_fund(protocol):
    p = protocol
    v, usdc = p.vault, p.usdc
    usdc.mint(p.admin, 1_000 * 10**6)
    usdc.approve(v.address, 1_000 * 10**6)
    v.fund_insurance(1_000 * 10**6)
    a = p.new_user().address
    with boa.env.prank(p.engine.address):
        v.settle_cash(a, -400 * WAD - 7)
        assert v.cover_deficit(a) == (400 * WAD + 7, 0)
    assert v.insurance_fund() == 600 * WAD - 7
    assert v.bad_debt() == 0
    assert v.cash(a) == 0


def test_set_engine_only_once(protocol):
    p = protocol
    v = p.vault
    with boa.reverts("vault: engine already set"):
        v.set_engine(p.new_user().address)
    fresh = deploy_unique(deployer("CollateralVault"), p.admin, p.usdc.address, p.oracle.address)
    assert fresh.engine() == "0x0000000000000000000000000000000000000000"
    with boa.env.prank(p.new_user().address):
        with boa.reverts("roles: not admin"):
            fresh.set_engine(p.engine.address)
    with boa.reverts("vault: zero engine"):
        fresh.set_engine("0x0000000000000000000000000000000000000000")
    fresh.set_engine(p.engine.address)
    (ev,) = events(fresh, "EngineSet")
    assert ev.engine == p.engine.address
    with boa.reverts("vault: engine already set"):
        fresh.set_engine(p.admin)
    assert fresh.engine() == p.engine.address


def test_settlement_decimals_above_18_rejected(protocol):
    p = protocol
    bad = no_return_token(19)
    with boa.reverts("vault: decimals above 18"):
        deploy_unique(deployer("CollateralVault"), p.admin, bad.address, p.oracle.address)
    eighteen = deploy_unique(deployer("MockERC20"), "DAI", "DAI", 18)
    assert (
        deploy_unique(deployer("CollateralVault"), p.admin, eighteen.address, p.oracle.address).SETTLEMENT_SCALE() == 1
    )


# ------------------------------------------------------------------ listing


def test_list_asset_checks(protocol):
    p = protocol
    v = p.vault
    new = deploy_unique(deployer("MockERC20"), "New", "NEW", 12)
    with boa.env.prank(p.new_user().address):
        with boa.reverts("roles: not admin"):
            v.list_asset(new.address, 0, HAIRCUT, 1)
    with boa.reverts("vault: settlement token is cash"):
        v.list_asset(p.usdc.address, 0, HAIRCUT, 1)
    with boa.reverts("vault: asset already listed"):
        v.list_asset(p.tokens["WETH"].address, 0, HAIRCUT, 1)
    with boa.reverts("vault: haircut out of bounds"):
        v.list_asset(new.address, 0, WAD + 1, 1)
    with boa.reverts("vault: decimals above 18"):
        v.list_asset(no_return_token(19).address, 0, HAIRCUT, 1)
    with boa.reverts("oracle: unknown price id"):
        v.list_asset(new.address, 3, HAIRCUT, 1)  # ETH, BTC, USDC exist
    p.oracle.add_price_id("NEW")
    with boa.reverts("oracle: no valid price"):
        v.list_asset(new.address, 3, HAIRCUT, 1)
    assert v.list_asset(new.address, 0, WAD, 1) == 2  # haircut exactly 100% allowed
    assert v.asset_count() == 3
    assert v.assets(2).decimals == 12
    for i in range(3, 8):
        t = deploy_unique(deployer("MockERC20"), "T", "T", 18)
        assert v.list_asset(t.address, 1, 0, 1) == i
    t = deploy_unique(deployer("MockERC20"), "T", "T", 18)
    with boa.reverts("vault: too many assets"):
        v.list_asset(t.address, 1, 0, 1)


def test_set_asset_params_checks(protocol):
    p = protocol
    v = p.vault
    with boa.env.prank(p.new_user().address):
        with boa.reverts("roles: not risk admin"):
            v.set_asset_params(WETH_ID, HAIRCUT, 1)
    with boa.reverts("vault: unknown asset"):
        v.set_asset_params(2, HAIRCUT, 1)
    with boa.reverts("vault: haircut out of bounds"):
        v.set_asset_params(WETH_ID, WAD + 1, 1)
    v.set_asset_params(WETH_ID, WAD, 7)
    assert (v.assets(WETH_ID).haircut, v.assets(WETH_ID).deposit_cap) == (WAD, 7)
    v.set_asset_params(WBTC_ID, 0, 0)
    a = p.new_user()
    with boa.reverts("vault: deposit cap exceeded"):
        p.deposit(a, "WBTC", 1)


# ------------------------------------------------------------------ valuation


def test_collateral_value_hand_calculation(protocol):
    p = protocol
    v = p.vault
    p.set_price("ETH", 1234.56789012)
    p.set_price("BTC", 27123.45678901)
    eth_px = 123456789012 * 10**10
    btc_px = 2712345678901 * 10**10
    weth_hc = 777_700_000_000_000_001  # deliberately odd haircuts
    wbtc_hc = 850_000_000_000_000_003
    v.set_asset_params(WETH_ID, weth_hc, 10_000_000 * WAD)
    v.set_asset_params(WBTC_ID, wbtc_hc, 1_000_000 * 10**8)
    p.phase_in()  # the WETH cut from 0.85
    a = p.new_user()
    weth_bal = 1_234_567_890_123_456_789
    wbtc_bal = 98_765_432
    p.deposit(a, "WETH", weth_bal)
    p.deposit(a, "WBTC", wbtc_bal)
    p.deposit(a, "USDC", 42 * 10**6)
    weth_val = weth_bal * eth_px * weth_hc // (10**18 * WAD)
    wbtc_val = wbtc_bal * btc_px * wbtc_hc // (10**8 * WAD)
    # each term is floored separately and the flooring is real (not exact division)
    assert (weth_bal * eth_px * weth_hc) % (10**18 * WAD) != 0
    assert (wbtc_bal * btc_px * wbtc_hc) % (10**8 * WAD) != 0
    assert v.collateral_value(a.address) == weth_val + wbtc_val
    assert v.margin_inputs(a.address, [eth_px, btc_px]) == (42 * WAD, weth_val + wbtc_val)
    # margin_inputs values at the prices it is given, not the oracle's
    assert v.margin_inputs(a.address, [1000 * WAD, 20000 * WAD]) == (
        42 * WAD,
        weth_bal * 1000 * weth_hc // 10**18 + wbtc_bal * 20000 * WAD * wbtc_hc // (10**8 * WAD),
    )
    # equity in the engine = cash + collateral value (no positions)
    assert p.equity(a.address) == 42 * WAD + weth_val + wbtc_val
    # zero haircut: counts for nothing
    v.set_asset_params(WBTC_ID, 0, 1_000_000 * 10**8)
    p.phase_in()
    assert v.collateral_value(a.address) == weth_val
    assert v.collateral_value(p.new_user().address) == 0
