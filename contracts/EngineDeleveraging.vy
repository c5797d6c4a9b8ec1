# pragma version 0.4.3
# pragma evm-version cancun
# pragma optimize gas
# pragma nonreentrancy off
"""
@title Engine deleveraging: the code `MarginEngine.nominate` and `MarginEngine.deleverage` run
@notice Auto-deleveraging rounds (`lib/engine_core.vy` `nominate`, `deleverage`),
        deployed apart from the engine and its liquidation code so that each stays under the
        EIP-170 code size limit.
@dev Meant to be reached only by the engine's delegatecall, in the engine's storage. Called
     directly it acts on its own, empty storage: it holds no funds and no role, and the vault
     refuses its calls (not the engine), so it can do nothing.
@custom:security Same storage layout as the engine by construction (both initialize
     `lib/engine_core.vy` alone); deployed with the engine's vault and oracle, which the engine
     checks at deployment.
@license MIT
"""

import lib.engine_core as core

initializes: core

exports: (
    core.VAULT,
    core.ORACLE,
    core.nominate,
    core.deleverage,
)


@deploy
def __init__(vault: address, oracle: address):
    core.__init__(msg.sender, vault, oracle)
