import pytest

from keeper.replay.population import KIND_WEIGHTS, make_population

PRICES = {"ETH": 200.0, "BTC": 8000.0}
IM_RATE = 0.10
SPREAD_IM = 0.02
HAIRCUT = 0.85


def initial_margin_fraction(spec) -> float:
    """IM / equity by the contract's rules (net per underlying, spread charge on the offset)."""
    longs, shorts = {}, {}
    for market, size in spec.trades:
        und = market.split("-")[0]
        (longs if size > 0 else shorts)[und] = (longs if size > 0 else shorts).get(und, 0) + abs(size)
    im = 0.0
    for und in set(longs) | set(shorts):
        long_, short = longs.get(und, 0), shorts.get(und, 0)
        im += abs(long_ - short) * PRICES[und] * IM_RATE + min(long_, short) * PRICES[und] * SPREAD_IM
    equity = spec.deposits.get("USDC", 0) + HAIRCUT * (
        spec.deposits.get("WETH", 0) * PRICES["ETH"] + spec.deposits.get("WBTC", 0) * PRICES["BTC"]
    )
    return im / equity


def test_population_is_seeded_mixed_and_opens_within_initial_margin():
    a = make_population(500, PRICES, seed=3)
    assert a == make_population(500, PRICES, seed=3)
    assert a != make_population(500, PRICES, seed=4)
    kinds = {s.kind for s in a}
    assert kinds == set(KIND_WEIGHTS)
    for spec in a:
        assert 0 < initial_margin_fraction(spec) < 0.95, spec
    # collateral_long accounts hold the asset they are long, and nothing else
    for spec in (s for s in a if s.kind == "collateral_long"):
        ((market, size),) = spec.trades
        assert size > 0 and set(spec.deposits) == {"WETH" if market.startswith("ETH") else "WBTC"}
    basis = [s for s in a if s.kind == "basis"]
    assert all(s.trades[0][1] == -s.trades[1][1] for s in basis)


@pytest.mark.parametrize("n,prices", [(0, PRICES), (5, {"ETH": 0.0, "BTC": 1.0}), (5, {"ETH": 1.0})])
def test_population_rejects_bad_input(n, prices):
    with pytest.raises(ValueError):
        make_population(n, prices)
