"""Transaction sending for the keeper: one nonce source per key, EIP-1559 fees, replacement of
stuck transactions with bumped fees, and a write-ahead journal so a restart picks up where the
last run stopped.

Gas policy (explicit, in the style of pymaker's gas strategies):
- a new transaction pays max priority fee (tip) = `priority_fee` and max fee =
  `base_fee_multiplier` x latest base fee + tip, never above `max_fee_cap`;
- a transaction not mined `bump_after_blocks` blocks after it was signed is replaced (same
  nonce) with both the max fee and the tip raised by at least `bump_percent` % (rounded up to
  the wei), and the max fee at least `base_fee_multiplier` x the current base fee + new tip;
  never above `max_fee_cap` / `max_priority_fee_cap`, at most `max_bumps` times. Clients
  require both fields to rise for a replacement (geth: by 10 %, "replacement transaction
  underpriced" otherwise), so once either cap stops a full bump the transaction is left as it
  is until the base fee falls.

Every transaction is journalled (see keeper/journal.py) with its signed raw bytes *before* it is
broadcast. `reconcile()` (on start), `poll(block)` (every block) and `resync_nonce()` settle
journalled transactions from the chain: a receipt of any of its hashes -> "mined"/"failed"; its
nonce used on chain by a transaction that is not ours -> "dropped"; otherwise still pending,
and re-broadcast if the node no longer knows it.

One nonce source per key: the journal file is locked (flock) while a TxManager uses it. Two
processes sending from the same key with different journals (or without one) are not
supported: they will collide on nonces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import requests
from eth_account import Account
from web3 import Web3
from web3.exceptions import TransactionNotFound, Web3RPCError

from keeper.errors import KeeperError
from keeper.journal import FAILED, MINED, REPLACED_BY_OTHER, TxJournal, TxRecord
from keeper.units import GWEI

log = logging.getLogger("keeper.tx")


@dataclass(frozen=True)
class GasPolicy:
    """Fee and replacement rules. Fees in wei per gas; `gas_limit_margin` x estimate + headroom gas."""

    priority_fee: int = 1 * GWEI
    base_fee_multiplier: int = 2
    max_fee_cap: int = 500 * GWEI
    gas_limit_margin: float = 1.25  # x eth_estimateGas
    # Several liquidations in one block change the liquidator's own storage (new position slots
    # cost ~100k more gas than the estimate against the previous block showed); unused gas is
    # refunded, so headroom costs nothing.
    gas_limit_headroom: int = 150_000
    bump_after_blocks: int = 3  # a transaction not mined after this many blocks gets replaced
    # geth's txpool requires +10 % on both fee fields to replace; 13 % (>= pymaker's 12.5 %) clears it
    bump_percent: int = 13
    max_bumps: int = 10
    max_priority_fee_cap: int = 50 * GWEI

    def __post_init__(self):
        checks = (
            (self.priority_fee >= 0, "priority_fee must be >= 0"),
            (self.base_fee_multiplier >= 1, "base_fee_multiplier must be >= 1"),
            (self.max_fee_cap > 0, "max_fee_cap must be > 0"),
            (
                self.priority_fee <= min(self.max_priority_fee_cap, self.max_fee_cap),
                "priority_fee must be <= max_priority_fee_cap and max_fee_cap",
            ),
            (self.gas_limit_margin >= 1, "gas_limit_margin must be >= 1"),
            (self.gas_limit_headroom >= 0, "gas_limit_headroom must be >= 0"),
            (self.bump_after_blocks >= 1, "bump_after_blocks must be >= 1"),
            (self.bump_percent >= 10, "bump_percent must be >= 10 (clients refuse smaller replacements)"),
            (self.max_bumps >= 0, "max_bumps must be >= 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(f"gas policy: {message}")


class FeeCapExceeded(KeeperError, RuntimeError):
    """The network's base fee is above what the gas policy allows to pay."""


@dataclass(frozen=True)
class Outcome:
    """How a journalled transaction ended.

    `status`: "mined" (receipt status 1), "failed" (mined, receipt status 0) or "dropped" (its
    nonce was used by a transaction that is not ours; `receipt` is None). `tx_hash` is the hash
    that was mined, or the newest one signed for a dropped transaction. `receipt` is the web3
    receipt as a dict.
    """

    key: str
    tx_hash: str
    status: str
    receipt: dict | None


def _raise_by(value: int, percent: int) -> int:
    """value x (100 + percent) / 100, rounded up to the wei (a replacement must not fall short)."""
    return -(-value * (100 + percent) // 100)


def replacement_fees(max_fee: int, tip: int, base_fee: int, policy: GasPolicy) -> tuple[int, int] | None:
    """(max fee, tip) in wei per gas for replacing a transaction that paid (max_fee, tip), or
    None if a cap leaves no room for a full bump.

    tip' = max(ceil(tip x (1 + p)), priority_fee); max fee' = max(ceil(max_fee x (1 + p)),
    base_fee_multiplier x base_fee + tip'), then capped at max_fee_cap; p = bump_percent / 100.
    Both must reach ceil(old x (1 + p)) within their caps (geth's replacement rule).
    """
    need_tip, need_max = _raise_by(tip, policy.bump_percent), _raise_by(max_fee, policy.bump_percent)
    new_tip = max(need_tip, policy.priority_fee)
    if new_tip > policy.max_priority_fee_cap:
        return None
    new_max = min(max(need_max, base_fee * policy.base_fee_multiplier + new_tip), policy.max_fee_cap)
    if new_max < need_max or new_tip > new_max:
        return None
    return new_max, new_tip


# how the node answered a broadcast
_SENT, _BASE_FEE, _NONCE_USED, _REJECTED, _UNKNOWN = "sent", "base-fee", "nonce-used", "rejected", "unknown"
_TRANSPORT_ERRORS = (requests.RequestException, OSError, TimeoutError)


class TxManager:
    """Signs, sends, tracks and replaces transactions from one key.

    `journal`: where records persist (None: in memory, lost on exit). Raises JournalLocked /
    JournalError if the journal is held by another process or belongs to another key or chain.
    `send_w3`: where signed transactions are broadcast (eth_sendRawTransaction), e.g. a private
    relay; None = `w3`. Everything else (nonce, fees, receipts, whether the node knows a
    transaction) is read from `w3`.
    """

    def __init__(
        self,
        w3: Web3,
        private_key: str,
        policy: GasPolicy = GasPolicy(),
        journal: TxJournal | None = None,
        send_w3: Web3 | None = None,
    ):
        self.w3 = w3
        self.send_w3 = send_w3
        self.journal = journal if journal is not None else TxJournal(None)
        try:
            self.account = Account.from_key(private_key)
            self.address = self.account.address
            self.policy = policy
            self.chain_id = w3.eth.chain_id
            self.journal.bind(self.address, self.chain_id, Web3.to_hex(w3.eth.get_block(0)["hash"]))
            self._outbox: list[Outcome] = []  # settled, not yet handed out by poll() / reconcile()
            self._warned: set[tuple[int, str]] = set()
            self.nonce = self._next_nonce()
        except BaseException:
            self.journal.close()  # the caller has no handle on a half-built manager: free the lock
            raise

    # ------------------------------------------------------------------ nonce and fees

    def _next_nonce(self) -> int:
        """max(node's pending transaction count, highest pending journalled nonce + 1)."""
        chain = self.w3.eth.get_transaction_count(self.address, "pending")
        return max([chain] + [r.nonce + 1 for r in self.journal.pending()])

    def resync_nonce(self) -> None:
        """Settle journalled transactions (re-broadcasting any the node forgot) and take the nonce
        from the chain and the journal again. Outcomes found here are returned by the next poll()."""
        self._check(block=None, bump=False)
        self.nonce = self._next_nonce()

    def _latest(self) -> tuple[int, int]:
        block = self.w3.eth.get_block("latest")
        return block["number"], block.get("baseFeePerGas", 0)

    def _fees(self, base: int) -> tuple[int, int]:
        if base + self.policy.priority_fee > self.policy.max_fee_cap:
            raise FeeCapExceeded(
                f"base fee {base / GWEI:.1f} gwei is above the cap {self.policy.max_fee_cap / GWEI:.0f} gwei"
            )
        return min(
            base * self.policy.base_fee_multiplier + self.policy.priority_fee, self.policy.max_fee_cap
        ), self.policy.priority_fee

    def fees(self) -> tuple[int, int]:
        """(max fee per gas, max priority fee per gas) in wei for a new transaction."""
        return self._fees(self._latest()[1])

    def balance(self) -> int:
        """The keeper's ETH balance in wei (latest block)."""
        return self.w3.eth.get_balance(self.address)

    def pending_keys(self) -> set[str]:
        """Idempotency keys of transactions sent and not yet settled."""
        return self.journal.pending_keys() - {""}

    # ------------------------------------------------------------------ sending

    def send(self, call, gas_estimate: int, key: str | None = None) -> str | None:
        """Sign, journal, then broadcast a contract function call; returns its hash (0x hex).

        `key` names the intent (e.g. "liquidate:0xABC"): while a transaction with this key is
        pending, nothing is sent and None is returned. key=None: no such check.
        Gas limit = gas_estimate x gas_limit_margin + gas_limit_headroom.
        If the node cannot be reached the transaction stays journalled, the hash is returned and
        poll() re-broadcasts it. Raises FeeCapExceeded, or Web3RPCError if the node refuses the
        transaction (nothing is journalled then; on "nonce too low" the nonce is resynchronised).
        """
        if key is not None:
            if not key:
                raise ValueError("transaction key must be a non-empty string or None")
            if self.journal.is_pending(key):
                log.info("not sending %s: a transaction for it is pending", key)
                return None
        if gas_estimate <= 0:
            raise ValueError(f"gas estimate must be positive, got {gas_estimate}")
        number, base = self._latest()
        max_fee, tip = self._fees(base)
        gas = int(gas_estimate * self.policy.gas_limit_margin) + self.policy.gas_limit_headroom
        built = call.build_transaction(
            {
                "from": self.address,
                "nonce": self.nonce,
                "gas": gas,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": tip,
                "chainId": self.chain_id,
            }
        )
        rec = TxRecord(
            key=key or "", nonce=self.nonce, hashes=[], max_fee=max_fee, tip=tip, gas=gas, to=built["to"],
            data=Web3.to_hex(hexstr=built["data"]) if isinstance(built["data"], str) else Web3.to_hex(built["data"]),
            sent_block=number, value=int(built.get("value", 0)),
        )  # fmt: skip
        rec = self._signed(rec)
        self.journal.put(rec)  # write-ahead: a crash from here on is reconciled from the journal
        kind, error = self._broadcast(rec.raw_tx)
        if kind in (_SENT, _UNKNOWN):
            if kind == _UNKNOWN:
                log.warning(
                    "nonce %d (%s): node unreachable while sending %s (%s); journalled, will re-broadcast",
                    rec.nonce,
                    rec.key,
                    rec.hashes[-1],
                    error,
                )
            self.nonce += 1
            return rec.hashes[-1]
        self.journal.delete(rec.nonce)
        if kind == _NONCE_USED:
            self.nonce = self._next_nonce()
        raise error

    def _signed(self, rec: TxRecord) -> TxRecord:
        """`rec` with a newly signed transaction for its fields appended to hashes / raw_tx."""
        tx = {
            "type": 2, "chainId": self.chain_id, "nonce": rec.nonce, "to": rec.to, "value": rec.value, "data": rec.data,
            "gas": rec.gas, "maxFeePerGas": rec.max_fee, "maxPriorityFeePerGas": rec.tip,
        }  # fmt: skip
        signed = self.account.sign_transaction(tx)
        return replace(rec, hashes=[*rec.hashes, Web3.to_hex(signed.hash)], raw_tx=Web3.to_hex(signed.raw_transaction))

    def _broadcast(self, raw_tx: str) -> tuple[str, Exception | None]:
        try:
            (self.send_w3 or self.w3).eth.send_raw_transaction(raw_tx)
        except Web3RPCError as e:
            msg = str(e).lower()
            if "already known" in msg or "already imported" in msg or "known transaction" in msg:
                return _SENT, None
            if "nonce too low" in msg or "nonce is too low" in msg:
                return _NONCE_USED, e
            if "base fee" in msg:  # e.g. "max fee per gas less than block base fee"
                return _BASE_FEE, e
            return _REJECTED, e
        except _TRANSPORT_ERRORS as e:
            return _UNKNOWN, e
        return _SENT, None

    # ------------------------------------------------------------------ tracking

    def reconcile(self) -> list[Outcome]:
        """On start: settle every pending journalled transaction from the chain, re-broadcast the
        ones the node forgot, and set the nonce. Returns the finished ones."""
        self._check(block=None, bump=False)
        self.nonce = self._next_nonce()
        out, self._outbox = self._outbox, []
        return out

    def poll(self, block: int) -> list[Outcome]:
        """Every block: settle pending transactions, replace those not mined `bump_after_blocks`
        after they were signed, re-broadcast those the node forgot. Returns the finished ones."""
        self._check(block=block, bump=True)
        out, self._outbox = self._outbox, []
        return out

    def _check(self, block: int | None, bump: bool) -> None:
        """One pass over the pending records. Outcomes go to the outbox as each record settles,
        so an RPC error half-way loses none of them (the journal already says they are done)."""
        records = self.journal.pending()
        if not records:
            return
        # a nonce below the mined count was used: by one of our hashes or by someone else
        mined_count = self.w3.eth.get_transaction_count(self.address, "latest")
        dropped = False
        base_fee = None
        for rec in records:
            try:
                if rec.nonce < mined_count:
                    outcome = self._settle(rec)
                    self._outbox.append(outcome)
                    dropped |= outcome.status == "dropped"
                    continue
                if bump and block is not None and block - rec.sent_block >= self.policy.bump_after_blocks:
                    if base_fee is None:
                        base_fee = self._latest()[1]
                    if self._bump(rec, block, base_fee):
                        continue
                if not self._node_knows(rec.hashes[-1]):
                    self._rebroadcast(rec)
            except (Web3RPCError, ValueError, *_TRANSPORT_ERRORS) as e:
                # one transaction's receipt or lookup failing must not hold up the others: it
                # stays pending in the journal and is looked at again next poll
                log.warning(
                    "nonce %d (%s): cannot check it now (%s: %s); next poll",
                    rec.nonce,
                    rec.key,
                    e.__class__.__name__,
                    str(e)[:160],
                )
        if dropped:
            self.nonce = self._next_nonce()

    def _settle(self, rec: TxRecord) -> Outcome:
        for tx_hash in reversed(rec.hashes):
            try:
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                continue
            status = MINED if receipt["status"] == 1 else FAILED
            self.journal.put(replace(rec, status=status, mined_hash=tx_hash))
            log.info("nonce %d (%s): %s %s in block %d", rec.nonce, rec.key, status, tx_hash, receipt["blockNumber"])
            return Outcome(rec.key, tx_hash, status, dict(receipt))
        self.journal.put(replace(rec, status=REPLACED_BY_OTHER))
        log.warning(
            "nonce %d (%s): used on chain by a transaction that is not ours; dropped %s",
            rec.nonce,
            rec.key,
            ", ".join(rec.hashes),
        )
        return Outcome(rec.key, rec.hashes[-1], "dropped", None)

    def _node_knows(self, tx_hash: str) -> bool:
        try:
            self.w3.eth.get_transaction(tx_hash)
            return True
        except TransactionNotFound:
            return False

    def _rebroadcast(self, rec: TxRecord) -> None:
        kind, error = self._broadcast(rec.raw_tx)
        if kind == _SENT and self.send_w3 is not None:
            # a private relay's transactions are unknown to the read endpoint until mined: sent
            # to the relay again every poll (it answers "already known"), quietly
            log.debug("nonce %d (%s): re-sent %s to the send endpoint", rec.nonce, rec.key, rec.hashes[-1])
        elif kind == _SENT:
            log.info("nonce %d (%s): node had forgotten %s; re-broadcast", rec.nonce, rec.key, rec.hashes[-1])
        elif kind in (_REJECTED, _UNKNOWN):
            log.warning("nonce %d (%s): re-broadcast of %s failed: %s", rec.nonce, rec.key, rec.hashes[-1], error)
        else:  # below the base fee (waits for a bump or a lower base fee) / nonce just used (settled next poll)
            log.debug("nonce %d (%s): re-broadcast of %s refused: %s", rec.nonce, rec.key, rec.hashes[-1], error)

    def _warn_once(self, rec: TxRecord, what: str, message: str, *args) -> None:
        if (rec.nonce, what) not in self._warned:
            self._warned.add((rec.nonce, what))
            log.warning(message, *args)

    def _bump(self, rec: TxRecord, block: int, base_fee: int) -> bool:
        """Replace `rec` with higher fees. True if a replacement was signed (nothing more to do)."""
        if rec.bumps >= self.policy.max_bumps:
            self._warn_once(
                rec,
                "max",
                "nonce %d (%s): not mined after %d replacements; leaving it at max fee %.2f gwei",
                rec.nonce,
                rec.key,
                rec.bumps,
                rec.max_fee / GWEI,
            )
            return False
        fees = replacement_fees(rec.max_fee, rec.tip, base_fee, self.policy)
        if fees is None:
            self._warn_once(
                rec, "cap", "nonce %d (%s): fees at the cap (max fee %.2f gwei, tip %.2f gwei, base fee %.2f gwei); waiting for the base fee to fall",
                rec.nonce, rec.key, rec.max_fee / GWEI, rec.tip / GWEI, base_fee / GWEI,
            )  # fmt: skip
            return False
        new = self._signed(replace(rec, max_fee=fees[0], tip=fees[1], sent_block=block, bumps=rec.bumps + 1))
        self.journal.put(new)  # write-ahead, as in send()
        kind, error = self._broadcast(new.raw_tx)
        if kind in (_SENT, _UNKNOWN, _BASE_FEE):
            # below the base fee: the node takes it once the base fee falls; poll re-broadcasts it
            log.info(
                "nonce %d (%s): replaced after %d blocks, max fee %.2f -> %.2f gwei, tip %.2f -> %.2f gwei: %s%s",
                rec.nonce, rec.key, block - rec.sent_block, rec.max_fee / GWEI, new.max_fee / GWEI, rec.tip / GWEI, new.tip / GWEI,
                new.hashes[-1], " (below the base fee for now; re-broadcast until taken)" if kind == _BASE_FEE else "",
            )  # fmt: skip
            return True
        self.journal.put(replace(rec, sent_block=block))  # refused: keep the old version, retry later
        if kind == _NONCE_USED:
            return True  # one of ours was mined meanwhile: settled next poll
        log.warning("nonce %d (%s): replacement refused: %s", rec.nonce, rec.key, error)
        return False

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release the journal (and its lock)."""
        self.journal.close()

    def __enter__(self) -> TxManager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DryRunTx:
    """The transaction manager of `keeper run --dry-run`: the same reads, no key, no journal, and
    nothing signed or sent. `send` simulates the call with eth_call from `address` at the latest
    block, logs what would be sent and returns None (as for a key already in flight). The
    liquidator logs its own liquidations (with the expected reward) and does not call `send`."""

    def __init__(self, w3: Web3, address: str):
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.chain_id = w3.eth.chain_id
        self.sent = 0

    def reconcile(self) -> list[Outcome]:
        return []

    def poll(self, block: int) -> list[Outcome]:
        return []

    def resync_nonce(self) -> None:
        pass

    def pending_keys(self) -> set[str]:
        return set()

    def balance(self) -> int:
        return self.w3.eth.get_balance(self.address)

    def send(self, call, gas_estimate: int, key: str | None = None) -> None:
        try:
            result = call.call({"from": self.address}, block_identifier="latest")
            outcome = f"simulated result {result!r}"
        except Exception as e:  # noqa: BLE001 - a dry run reports the revert instead of sending
            outcome = f"simulation reverted ({getattr(e, 'message', None) or e})"
        log.info(
            "dry-run: would send %s (%s, gas estimate %d); %s; not sent",
            key or "a transaction", call.fn_name, gas_estimate, outcome,
            extra={"key": key, "gas": gas_estimate, "dry_run": True},
        )  # fmt: skip
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> DryRunTx:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
