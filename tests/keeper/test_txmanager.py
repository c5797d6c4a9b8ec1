"""The keeper's transaction manager on a real Anvil chain: fee bumping of stuck transactions, a
base-fee spike against the fee cap, a transaction the node dropped, restarts with a persistent
journal, idempotency keys, a nonce taken by another sender, and the journal lock.

Anvil's RPCs make the faults: `evm_setAutomine false` + `evm_mine` keep transactions pending,
`anvil_setNextBlockBaseFeePerGas` moves the base fee, `anvil_dropTransaction` drops one. Each
transaction mints 1 unit of a MockERC20 to a receiver named after its key, so the receiver's
balance counts how many transactions of that key were mined.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
from web3 import Web3
from web3.exceptions import TransactionNotFound

from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.artifacts import load_artifact
from keeper.journal import JournalError, JournalLocked, TxJournal, TxRecord
from keeper.txmanager import GWEI, FeeCapExceeded, GasPolicy, Outcome, TxManager, replacement_fees

ROOT = Path(__file__).resolve().parents[2]
ADDRESS, KEY = DEV_ACCOUNTS[0]  # unlocked on Anvil, so eth_sendTransaction can use the same nonces
DEPLOYER = DEV_ACCOUNTS[1][0]
GAS = 80_000  # mint's gas estimate is ~70k; the policy adds margin and headroom


# ---------------------------------------------------------------- pure: fee arithmetic, journal


def test_replacement_fees_match_hand_calculation():
    p = GasPolicy()  # bump 13 %, base fee x2, tip 1 gwei
    # 3 gwei x 1.13 = 3.39 gwei; 1 gwei x 1.13 = 1.13 gwei; 2 x 1 gwei + 1.13 = 3.13 < 3.39
    assert replacement_fees(3 * GWEI, 1 * GWEI, 1 * GWEI, p) == (3_390_000_000, 1_130_000_000)
    # base fee 4 gwei: 2 x 4 + 1.13 = 9.13 gwei covers the base fee, more than +13 %
    assert replacement_fees(3 * GWEI, 1 * GWEI, 4 * GWEI, p) == (9_130_000_000, 1_130_000_000)
    # rounded up to the wei: 7 x 1.13 = 7.91 -> 8 (a replacement must not fall short of +13 %)
    assert replacement_fees(7, 7, 0, GasPolicy(priority_fee=0)) == (8, 8)
    # capped: max fee 20 gwei at a 20 gwei cap cannot rise; a tip at its cap cannot either
    assert replacement_fees(20 * GWEI, 1 * GWEI, 50 * GWEI, GasPolicy(max_fee_cap=20 * GWEI)) is None
    assert replacement_fees(3 * GWEI, 1 * GWEI, 1 * GWEI, GasPolicy(max_priority_fee_cap=1 * GWEI)) is None
    # the cap binds below the base-fee target but still allows a full bump: 50 x 2 + 1.13 -> 20
    assert replacement_fees(3 * GWEI, 1 * GWEI, 50 * GWEI, GasPolicy(max_fee_cap=20 * GWEI)) == (
        20 * GWEI,
        1_130_000_000,
    )


def test_gas_policy_refuses_a_bump_clients_would_reject():
    with pytest.raises(ValueError, match="bump_percent must be >= 10"):
        GasPolicy(bump_percent=5)
    with pytest.raises(ValueError, match="priority_fee must be <= max_priority_fee_cap"):
        GasPolicy(priority_fee=2 * GWEI, max_priority_fee_cap=1 * GWEI)


def test_journal_round_trips_through_the_file(tmp_path):
    path = tmp_path / "tx.sqlite"
    rec = TxRecord(
        key="liquidate:0xabc", nonce=7, hashes=["0x01", "0x02"], max_fee=2**70, tip=10**9, gas=200_000,
        to="0x" + "11" * 20, data="0xdeadbeef", sent_block=12, bumps=1, raw_tx="0xf00d", value=3,
    )  # fmt: skip
    with TxJournal(path) as j:
        j.put(rec)
        j.put(
            TxRecord("other", 8, ["0x03"], 1, 1, 21_000, "0x" + "22" * 20, "0x", 13, status="mined", mined_hash="0x03")
        )
        j.put(TxRecord("gone", 9, ["0x04"], 1, 1, 21_000, "0x" + "22" * 20, "0x", 13))
        j.delete(9)
    with TxJournal(path) as j:  # reopened: what was written before close is there
        assert j.get(7) == rec  # 2**70 wei survives (stored as text, not int64)
        assert [r.nonce for r in j.pending()] == [7]
        assert j.pending_keys() == {"liquidate:0xabc"}
        assert [r.nonce for r in j.records()] == [7, 8]
        assert j.get(9) is None


def test_journal_refuses_a_file_that_is_not_a_journal(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database, " * 100)
    with pytest.raises(JournalError, match="not readable as a journal"):
        TxJournal(bad)
    with pytest.raises(JournalError, match="does not exist"):
        TxJournal(tmp_path / "missing" / "tx.sqlite")


# ---------------------------------------------------------------- chain helpers


def rpc(w3: Web3, method: str, *params):
    out = w3.provider.make_request(method, list(params))
    assert "error" not in out, out
    return out["result"]


def mine(w3: Web3, base_fee: int | None = None) -> int:
    """Mine one block (with the given base fee); returns its number."""
    if base_fee is not None:
        rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(base_fee))
    rpc(w3, "evm_mine")
    return w3.eth.block_number


def receiver(key: str) -> str:
    return Web3.to_checksum_address(Web3.keccak(text=key)[:20])


class Chain:
    def __init__(self, w3: Web3, token):
        self.w3, self.token = w3, token

    def call(self, key: str):
        """The transaction for `key`: mint 1 unit to the key's receiver."""
        return self.token.functions.mint(receiver(key), 1)

    def mined_count(self, key: str) -> int:
        """How many transactions for `key` were mined (the receiver's balance)."""
        return self.token.functions.balanceOf(receiver(key)).call()

    def pool_size(self) -> int:
        return int(rpc(self.w3, "txpool_status")["pending"], 16)

    def nonce(self, tag="latest") -> int:
        return self.w3.eth.get_transaction_count(ADDRESS, tag)

    def manager(self, journal: TxJournal | None = None, **policy) -> TxManager:
        return TxManager(self.w3, KEY, GasPolicy(**policy), journal)


@pytest.fixture
def chain():
    with Anvil() as url:
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
        art = load_artifact("MockERC20")
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = w3.eth.wait_for_transaction_receipt(
            factory.constructor("Test", "TST", 18).transact({"from": DEPLOYER})
        )
        token = w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)
        rpc(w3, "evm_setAutomine", False)
        mine(w3, base_fee=1 * GWEI)  # a known base fee to start from
        yield Chain(w3, token)


def mined_tx(w3: Web3, tx_hash: str):
    return w3.eth.get_transaction(tx_hash), w3.eth.get_transaction_receipt(tx_hash)


def assert_never_mined(w3: Web3, tx_hash: str):
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(tx_hash)


# ---------------------------------------------------------------- fee bumping


@pytest.mark.anvil
def test_stuck_transaction_is_replaced_with_higher_fees_and_the_same_nonce(chain):
    w3, tm = chain.w3, chain.manager()
    nonce = tm.nonce
    first = tm.send(chain.call("k"), GAS, key="k")
    rec = tm.journal.get(nonce)
    assert (rec.max_fee, rec.tip) == (3 * GWEI, 1 * GWEI)  # 2 x 1 gwei base fee + 1 gwei tip

    # the base fee rises above the max fee: not includable for 3 blocks, then replaced
    for _ in range(3):
        assert tm.poll(mine(w3, base_fee=4 * GWEI)) == []
    rec = tm.journal.get(nonce)
    assert rec.bumps == 1 and rec.hashes[0] == first and len(rec.hashes) == 2
    assert rec.tip >= 1 * GWEI * 113 // 100 and rec.max_fee >= 3 * GWEI * 113 // 100
    assert (rec.max_fee, rec.tip) == (9_130_000_000, 1_130_000_000)  # 2 x 4 + 1.13 gwei

    outcomes = tm.poll(mine(w3, base_fee=4 * GWEI))
    assert [(o.key, o.tx_hash, o.status) for o in outcomes] == [("k", rec.hashes[-1], "mined")]
    tx, receipt = mined_tx(w3, rec.hashes[-1])
    assert tx["nonce"] == nonce and tx["maxFeePerGas"] == 9_130_000_000 and receipt["status"] == 1
    assert_never_mined(w3, first)
    assert chain.mined_count("k") == 1 and chain.nonce() == nonce + 1
    assert tm.pending_keys() == set() and tm.journal.get(nonce).status == "mined"


@pytest.mark.anvil
def test_replacement_takes_the_place_of_a_transaction_still_in_the_pool(chain):
    """What a node that keeps an unmined transaction (geth) sees: the bump replaces it in the pool."""
    w3, tm = chain.w3, chain.manager()
    nonce = tm.nonce
    first = tm.send(chain.call("k"), GAS, key="k")
    head = w3.eth.block_number
    assert tm.poll(head + 2) == [] and len(tm.journal.get(nonce).hashes) == 1  # not due yet
    assert tm.poll(head + 3) == []  # 3 blocks after signing, still unmined: replaced
    rec = tm.journal.get(nonce)
    assert (rec.max_fee, rec.tip) == (3_390_000_000, 1_130_000_000)  # +13 % each; 2 x 1 + 1.13 is less
    pool = rpc(w3, "txpool_content")["pending"][ADDRESS.lower()]
    assert [tx["hash"] for tx in pool.values()] == [rec.hashes[-1]]  # replaced, not added
    outcomes = tm.poll(mine(w3))
    assert [(o.tx_hash, o.status) for o in outcomes] == [(rec.hashes[-1], "mined")]
    assert_never_mined(w3, first)
    assert chain.mined_count("k") == 1 and chain.nonce() == nonce + 1


@pytest.mark.anvil
def test_reverted_transaction_is_reported_failed(chain):
    w3, tm = chain.w3, chain.manager()
    nonce, before = tm.nonce, tm.balance()
    # a transfer from an empty balance reverts on chain ("mock: balance too low")
    tx_hash = tm.send(chain.token.functions.transfer(receiver("k"), 1), GAS, key="k")
    outcomes = tm.poll(mine(w3))
    assert [(o.key, o.tx_hash, o.status) for o in outcomes] == [("k", tx_hash, "failed")]
    receipt = outcomes[0].receipt
    assert receipt["status"] == 0 and tm.journal.get(nonce).status == "failed" and tm.pending_keys() == set()
    # the reverted transaction still paid gas used x effective gas price
    assert before - tm.balance() == receipt["gasUsed"] * receipt["effectiveGasPrice"] > 0


@pytest.mark.anvil
def test_base_fee_spike_bumps_to_the_cap_not_beyond_and_mines_when_it_falls(chain):
    cap = 20 * GWEI
    w3, tm = chain.w3, chain.manager(max_fee_cap=cap)
    nonce = tm.nonce
    tm.send(chain.call("k"), GAS, key="k")
    block = mine(w3, base_fee=50 * GWEI)  # 50x spike; afterwards it decays 12.5 % per empty block
    with pytest.raises(FeeCapExceeded):
        tm.send(chain.call("new"), GAS, key="new")  # 50 gwei + tip > 20 gwei cap: nothing new is sent
    outcomes, base_fees = [], []
    while not outcomes and len(base_fees) < 30:
        outcomes = tm.poll(block)
        rec = tm.journal.get(nonce)
        assert rec.max_fee <= cap and rec.tip <= tm.policy.max_priority_fee_cap
        block = mine(w3)
        base_fees.append(w3.eth.get_block(block)["baseFeePerGas"])
    outcomes += tm.poll(block)
    rec = tm.journal.get(nonce)
    assert [(o.key, o.status) for o in outcomes] == [("k", "mined")]
    # first bump went straight to the cap (2 x base fee + tip is far above it), the next was refused
    assert rec.bumps == 1 and rec.max_fee == cap and rec.tip == 1_130_000_000
    tx, receipt = mined_tx(w3, outcomes[0].tx_hash)
    assert tx["maxFeePerGas"] == cap and tx["nonce"] == nonce
    assert w3.eth.get_block(receipt["blockNumber"])["baseFeePerGas"] <= cap < 50 * GWEI
    assert chain.mined_count("k") == 1 and chain.mined_count("new") == 0 and chain.nonce() == nonce + 1


@pytest.mark.anvil
def test_dropped_transaction_is_rebroadcast_and_mined_once(chain):
    w3, tm = chain.w3, chain.manager()
    tx_hash = tm.send(chain.call("k"), GAS, key="k")
    rpc(w3, "anvil_dropTransaction", tx_hash)
    assert chain.pool_size() == 0
    assert tm.poll(w3.eth.block_number) == []  # the node forgot it: the same signed bytes again
    assert chain.pool_size() == 1 and w3.eth.get_transaction(tx_hash)["hash"] == Web3.to_bytes(hexstr=tx_hash)
    outcomes = tm.poll(mine(w3))
    assert [(o.key, o.tx_hash, o.status) for o in outcomes] == [("k", tx_hash, "mined")]
    assert outcomes[0].receipt["status"] == 1
    assert chain.mined_count("k") == 1


# ---------------------------------------------------------------- restart with the journal


@pytest.mark.anvil
def test_restart_reconciles_a_transaction_mined_while_down(chain, tmp_path):
    path = tmp_path / "tx.sqlite"
    with chain.manager(TxJournal(path)) as tm:
        nonce = tm.nonce
        tx_hash = tm.send(chain.call("k"), GAS, key="k")
    mine(chain.w3)  # mined while the keeper is down
    with chain.manager(TxJournal(path)) as tm:
        assert tm.pending_keys() == {"k"}  # known from the journal before reconciling
        outcomes = tm.reconcile()
        assert [(o.key, o.tx_hash, o.status) for o in outcomes] == [("k", tx_hash, "mined")]
        assert tm.nonce == nonce + 1 and tm.pending_keys() == set()
        assert tm.poll(mine(chain.w3)) == []  # reported once, nothing re-sent
    assert chain.pool_size() == 0 and chain.nonce() == nonce + 1 and chain.mined_count("k") == 1


@pytest.mark.anvil
def test_restart_tracks_and_bumps_a_still_pending_transaction(chain, tmp_path):
    path = tmp_path / "tx.sqlite"
    with chain.manager(TxJournal(path)) as tm:
        nonce = tm.nonce
        first = tm.send(chain.call("k"), GAS, key="k")
    block = mine(chain.w3, base_fee=4 * GWEI)  # stuck while the keeper is down
    with chain.manager(TxJournal(path)) as tm:
        assert tm.reconcile() == []
        assert tm.pending_keys() == {"k"} and tm.nonce == nonce + 1
        assert tm.send(chain.call("k"), GAS, key="k") is None  # the key survives the restart
        for _ in range(3):
            block = mine(chain.w3, base_fee=4 * GWEI)
            outcomes = tm.poll(block)
            if outcomes:
                break
        rec = tm.journal.get(nonce)
        assert rec.bumps == 1 and rec.hashes[0] == first
        outcomes += tm.poll(mine(chain.w3, base_fee=4 * GWEI))
        assert [(o.key, o.tx_hash, o.status) for o in outcomes] == [("k", rec.hashes[-1], "mined")]
        assert tm.nonce == nonce + 1
    assert_never_mined(chain.w3, first)
    assert chain.nonce() == nonce + 1 and chain.mined_count("k") == 1


@pytest.mark.anvil
def test_crash_between_journal_write_and_broadcast_is_recovered(chain, tmp_path, monkeypatch):
    path = tmp_path / "tx.sqlite"

    def unreachable(raw):
        raise requests.ConnectionError("connection refused")

    with chain.manager(TxJournal(path)) as tm:
        nonce = tm.nonce
        with monkeypatch.context() as m:
            m.setattr(chain.w3.eth, "send_raw_transaction", unreachable)
            tx_hash = tm.send(chain.call("k"), GAS, key="k")
    assert chain.pool_size() == 0  # never reached the node
    with chain.manager(TxJournal(path)) as tm:
        assert tm.reconcile() == [] and chain.pool_size() == 1  # re-broadcast from the journal
        outcomes = tm.poll(mine(chain.w3))
        assert [(o.key, o.tx_hash, o.status) for o in outcomes] == [("k", tx_hash, "mined")]
    assert chain.nonce() == nonce + 1 and chain.mined_count("k") == 1


# ---------------------------------------------------------------- one transaction per key, one nonce source


@pytest.mark.anvil
def test_second_send_with_the_same_key_sends_nothing(chain):
    w3, tm = chain.w3, chain.manager()
    nonce = tm.nonce
    assert tm.send(chain.call("k"), GAS, key="k") is not None
    assert tm.send(chain.call("k"), GAS, key="k") is None
    assert chain.pool_size() == 1 and tm.nonce == nonce + 1 and tm.pending_keys() == {"k"}
    assert [o.status for o in tm.poll(mine(w3))] == ["mined"]
    assert chain.mined_count("k") == 1 and tm.pending_keys() == set()
    # the two-argument form (no key) still works, without idempotency
    assert tm.send(chain.call("anon"), GAS) and tm.send(chain.call("anon"), GAS)
    assert [o.key for o in tm.poll(mine(w3))] == ["", ""]
    assert chain.mined_count("anon") == 2


@pytest.mark.anvil
def test_nonce_used_by_another_sender_is_dropped_and_the_nonce_resynced(chain):
    w3, tm = chain.w3, chain.manager()
    nonce = tm.nonce
    ours = tm.send(chain.call("k"), GAS, key="k")
    # the same address sends two transactions outside the keeper: nonce and nonce + 1
    for n in (nonce, nonce + 1):
        rpc(w3, "eth_sendTransaction", {"from": ADDRESS, "to": ADDRESS, "value": "0x0", "nonce": hex(n),
                                        "maxFeePerGas": hex(10 * GWEI), "maxPriorityFeePerGas": hex(5 * GWEI)})  # fmt: skip
    outcomes = tm.poll(mine(w3))
    assert outcomes == [Outcome("k", ours, "dropped", None)]
    assert tm.journal.get(nonce).status == "replaced-by-other"
    assert tm.nonce == nonce + 2 == chain.nonce()  # resynced past both outside transactions
    assert_never_mined(w3, ours)
    again = tm.send(chain.call("k"), GAS, key="k")  # the key is free again: the intent is retried
    assert [(o.tx_hash, o.status) for o in tm.poll(mine(w3))] == [(again, "mined")]
    assert w3.eth.get_transaction(again)["nonce"] == nonce + 2
    assert chain.mined_count("k") == 1


@pytest.mark.anvil
def test_second_manager_on_the_same_journal_fails_with_a_clear_error(chain, tmp_path):
    path = tmp_path / "tx.sqlite"
    tm = chain.manager(TxJournal(path))
    tm.send(chain.call("k"), GAS, key="k")
    with pytest.raises(JournalLocked, match="in use by another keeper process"):
        chain.manager(TxJournal(path))
    # and from another process, as a second keeper would be
    code = f"from keeper.journal import TxJournal; TxJournal({str(path)!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0 and "JournalLocked" in out.stderr and "in use by another keeper process" in out.stderr
    tm.close()
    # released on close; a journal written for one key refuses another
    with pytest.raises(JournalError, match="belongs to address"):
        TxManager(chain.w3, DEV_ACCOUNTS[2][1], journal=TxJournal(path))
    with chain.manager(TxJournal(path)) as tm2:
        assert tm2.pending_keys() == {"k"}
        assert [o.status for o in tm2.poll(mine(chain.w3))] == ["mined"]
    assert chain.mined_count("k") == 1


@pytest.mark.anvil
def test_one_receipt_that_cannot_be_fetched_does_not_hold_up_the_others(chain, monkeypatch):
    """An RPC error fetching one transaction's receipt: the others settle in the same poll, that
    one stays pending (its key still blocks a duplicate) and settles at the next poll."""
    from web3.exceptions import Web3RPCError

    w3, tm = chain.w3, chain.manager()
    first = tm.send(chain.call("a"), GAS, key="a")
    second = tm.send(chain.call("b"), GAS, key="b")
    block = mine(w3)
    real = w3.eth.get_transaction_receipt

    def flaky(tx_hash):
        if tx_hash == first:
            raise Web3RPCError("injected: receipt lookup failed")
        return real(tx_hash)

    monkeypatch.setattr(w3.eth, "get_transaction_receipt", flaky)
    assert [(o.key, o.tx_hash, o.status) for o in tm.poll(block)] == [("b", second, "mined")]
    assert tm.pending_keys() == {"a"} and tm.send(chain.call("a"), GAS, key="a") is None
    monkeypatch.setattr(w3.eth, "get_transaction_receipt", real)
    assert [(o.key, o.status) for o in tm.poll(block)] == [("a", "mined")]
    assert chain.mined_count("a") == 1 and chain.mined_count("b") == 1
