# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Protocol constants shared by every contract
@notice Fixed-point units, array bounds and the protocol version. One place for each, imported
        by the contracts and modules that need them (`import lib.constants as constants`).
@dev The keeper mirrors these in `keeper/risk/fixed.py` (WAD) and reads the bounds from the
     ABI (array sizes).
@license MIT
"""

# @dev Protocol release; `__version__()` on every deployable that exports it.
__version__: public(constant(String[8])) = "0.3.0"

# @dev Fixed point: prices, USD amounts, rates and sizes are WAD (18 decimals).
WAD: constant(uint256) = 10**18
IWAD: constant(int256) = 10**18

# @dev Oracle: price ids the router serves (index prices come back as one array).
MAX_PRICE_IDS: constant(uint256) = 8
# @dev Vault: collateral assets.
MAX_ASSETS: constant(uint256) = 8
# @dev Engine: underlyings, listed markets, markets one account may hold at once.
MAX_UNDERLYINGS: constant(uint256) = 4
MAX_MARKETS: constant(uint256) = 16
MAX_ACCOUNT_MARKETS: constant(uint256) = 8
# @dev Option market: listed series, series one account may hold at once.
MAX_SERIES: constant(uint256) = 256
MAX_ACCOUNT_SERIES: constant(uint256) = 32
# @dev Option liquidation: series one `liquidate_options` call moves at most (which ones is the
#      protocol's rule, `options_core._liquidation_subset`), so that the largest call needed to
#      liquidate a maximal account stays within a block's reach (docs/benchmarks.md).
MAX_LIQUIDATION_SERIES: constant(uint256) = 8
# @dev Auto-deleveraging: counterparties one round nominates, and one `deleverage` call closes
#      against, at most.
MAX_ADL_COUNTERPARTIES: constant(uint256) = 8
# @dev Auto-deleveraging round (`engine_core.nominate`): nominations stay open this long (s)
#      before the round may be deleveraged, so that anyone can name an account a caller would
#      rather leave out; the round lapses this long (s) after its notice ends.
ADL_NOTICE: constant(uint256) = 24
ADL_ROUND_TIME: constant(uint256) = 600

# @dev Option series and vol points expire at most two years ahead.
MAX_EXPIRY_HORIZON: constant(uint256) = 2 * 365 * 86400

# @dev A change that makes a margin requirement stricter phases in linearly over a week
#      (`lib/ramp.vy`).
REQUIREMENT_RAMP: constant(uint256) = 7 * 86400

# @dev Funding rates are quoted per 8 hours (dYdX / Binance convention).
FUNDING_PERIOD: constant(uint256) = 8 * 3600

# @dev Longest signature accepted from a contract wallet (ERC-1271): a Safe with 15 owners, an
#      ERC-4337 account's WebAuthn assertion.
MAX_SIGNATURE_LENGTH: constant(uint256) = 1024
