# pragma version 0.4.3
# pragma evm-version cancun
# pragma optimize gas
# pragma nonreentrancy off
"""
@title Option liquidation: the code `OptionMarket.liquidate_options` runs
@notice Partial liquidation of option positions (`lib/options_core.vy` `liquidate_options`),
        deployed apart from the option market so that each stays well under the EIP-170 code
        size limit.
@dev Meant to be reached only by the option market's delegatecall, in its storage. Called
     directly it acts on its own, empty storage: it holds no funds and no role, and the vault
     refuses its calls, so it can do nothing.
@custom:security Same storage layout as the option market by construction (both initialize
     `lib/options_core.vy` alone); deployed with the market's engine and vol feed, which the
     market checks at deployment.
@license MIT
"""

import lib.options_core as core

initializes: core

exports: (
    core.ENGINE,
    core.VOL_FEED,
    core.liquidate_options,
)


@deploy
def __init__(engine: address, vol_feed: address):
    core.__init__(msg.sender, engine, vol_feed)
