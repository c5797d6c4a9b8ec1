from tests.boa_protocol import WAD


def test_trade_and_partial_liquidation(protocol):
    p = protocol
    a, b, liq = p.new_user(), p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 100_000)
    p.deposit_usd(liq, 1_000_000)
    p.trade(a, b, "ETH-PERP", 40 * WAD, 2000 * WAD)
    p.set_price("ETH", 1820)
    assert p.engine.is_liquidatable(a.address)
    import boa
    with boa.env.prank(liq.address):
        p.engine.liquidate(a.address)
    assert p.engine.margin_summary(a.address).health_factor >= 125 * 10**16
