"""Transaction sending for the keeper: one local nonce source per key, EIP-1559 fees from the
latest base fee, local signing, and classification of send errors.

Gas policy (pymaker-style, explicit): max priority fee = `priority_fee`, max fee =
`base_fee_multiplier` x latest base fee + priority fee, never above `max_fee_cap`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from eth_account import Account
from web3 import Web3
from web3.exceptions import Web3RPCError

log = logging.getLogger("keeper.tx")

GWEI = 10**9


@dataclass(frozen=True)
class GasPolicy:
    priority_fee: int = 1 * GWEI
    base_fee_multiplier: int = 2
    max_fee_cap: int = 500 * GWEI
    gas_limit_margin: float = 1.25  # x eth_estimateGas
    # Several liquidations in one block change the liquidator's own storage (new position slots
    # cost ~100k more gas than the estimate against the previous block showed); unused gas is
    # refunded, so headroom costs nothing.
    gas_limit_headroom: int = 150_000


class FeeCapExceeded(RuntimeError):
    """The network's base fee is above what the gas policy allows to pay."""


class TxManager:
    """Signs and sends transactions from one key, tracking the nonce locally."""

    def __init__(self, w3: Web3, private_key: str, policy: GasPolicy = GasPolicy()):
        self.w3 = w3
        self.account = Account.from_key(private_key)
        self.address = self.account.address
        self.policy = policy
        self.chain_id = w3.eth.chain_id
        self.nonce = w3.eth.get_transaction_count(self.address, "pending")

    def resync_nonce(self) -> None:
        """Take the nonce from the node again (after a nonce error or a dropped transaction)."""
        self.nonce = self.w3.eth.get_transaction_count(self.address, "pending")

    def fees(self) -> tuple[int, int]:
        """(max fee per gas, max priority fee per gas) in wei for the next block."""
        base = self.w3.eth.get_block("latest").get("baseFeePerGas", 0)
        max_fee = base * self.policy.base_fee_multiplier + self.policy.priority_fee
        if base + self.policy.priority_fee > self.policy.max_fee_cap:
            raise FeeCapExceeded(f"base fee {base / GWEI:.1f} gwei is above the cap {self.policy.max_fee_cap / GWEI:.0f} gwei")
        return min(max_fee, self.policy.max_fee_cap), self.policy.priority_fee

    def send(self, call, gas_estimate: int) -> str:
        """Sign and broadcast a contract function call; returns the transaction hash (0x hex).

        Raises Web3RPCError from the node (the nonce is resynchronised first when the node
        reports a nonce problem) or FeeCapExceeded.
        """
        max_fee, tip = self.fees()
        tx = call.build_transaction(
            {
                "from": self.address,
                "nonce": self.nonce,
                "gas": int(gas_estimate * self.policy.gas_limit_margin) + self.policy.gas_limit_headroom,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": tip,
                "chainId": self.chain_id,
            }
        )
        signed = self.account.sign_transaction(tx)
        try:
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Web3RPCError as e:
            if "nonce" in str(e).lower():
                self.resync_nonce()
            raise
        self.nonce += 1
        return "0x" + bytes(tx_hash).hex()
