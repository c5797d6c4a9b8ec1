# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Structs shared across contracts
@notice Each struct that crosses a contract boundary is declared once, here, and used as
        `types.Name` by every contract, module and interface that passes it.
@license MIT
"""

from . import constants


# @dev An account's margin at current index prices (`MarginEngine.margin_summary`): equity
#      (WAD USD, rounded down, may be negative), initial and maintenance margin (WAD USD,
#      rounded up), health factor = equity / MM (WAD; max uint256 with nothing to maintain).
struct MarginSummary:
    equity: int256
    initial_margin: uint256
    maintenance_margin: uint256
    health_factor: uint256


struct Underlying:
    price_id: uint256
    im_rate: uint256
    mm_rate: uint256
    spread_im_rate: uint256
    spread_mm_rate: uint256


struct Market:
    underlying: uint256
    is_perpetual: bool
    expiry: uint256
    settlement_price: uint256
    funding_rate: int256
    funding_index: int256
    funding_time: uint256


# @dev A collateral asset listed in the vault (`CollateralVault.assets`): its token and decimals,
#      the oracle price id that values it, its haircut (WAD fraction of its value counted), its
#      deposit cap and the total deposited (token units).
struct Asset:
    token: address
    decimals: uint256
    price_id: uint256
    haircut: uint256
    deposit_cap: uint256
    total: uint256


struct Position:
    size: int256
    entry_price: uint256
    funding_index: int256


# @dev A signed intent to trade `size` (WAD units, > 0 buys) of perpetual or future `market`
#      at `limit_price` (WAD USD) or better, until `deadline` (unix s), once per `nonce`.
struct Order:
    account: address
    market: uint256
    size: int256
    limit_price: uint256
    nonce: uint256
    deadline: uint256


# @dev Likewise for option `series`, at premium `limit_price` (WAD USD per unit).
struct OptionOrder:
    account: address
    series: uint256
    size: int256
    limit_price: uint256
    nonce: uint256
    deadline: uint256


struct OptionState:
    series: uint256
    size: int256
    entry_price: uint256
    mark: uint256
    value: int256
    initial_margin: uint256
    maintenance_margin: uint256


struct StoredAttestation:
    position_version: uint256
    prices: DynArray[uint256, constants.MAX_PRICE_IDS]
    initial_margin: uint256
    maintenance_margin: uint256
    issued_at: uint256
    valid_until: uint256
    signer_set_version: uint256


# @dev So the file also compiles as a contract (brownie builds every file under contracts/):
#      the zero summary, an account with nothing (equity 0, no requirement, max health).
@external
@pure
def empty_margin_summary() -> MarginSummary:
    return MarginSummary(equity=0, initial_margin=0, maintenance_margin=0, health_factor=max_value(uint256))
