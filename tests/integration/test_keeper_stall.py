"""Stall attacks on the keeper (review findings 4 and 5) on a real Anvil chain, with `keeper run`
as its own process behind a small JSON-RPC proxy that counts (and can fail) the per-account
calls it makes.

Accounts are opened as in the review's reproduction: a pair of fresh accounts with the same
cash trade ETH-PERP long against short at 9.8x (IM is 10 %); ETH then falls 6 %, which leaves
every long side liquidatable with equity left (a liquidator earns half of a 2 % penalty on it).

The chain allows dust (`min_position_notional` 0, its lower bound): the default $10 minimum
refuses a 1-unit position on chain (tests/contracts/test_trust_bounds.py), but price falls and
partial liquidations still leave positions worth less than a liquidation's gas, and a
deployment may set no minimum. The keeper must not pay for them either way.

(a) 200 dust pairs (1 USDC unit of cash each) and one real pair ($5,000 each): the 201 longs
    become liquidatable in the same block; with default settings the keeper sends the real
    liquidation in that block, it lands in the next one, and the dust costs no eth_call, no
    eth_estimateGas and no transaction.
(b) six real pairs; every per-account eth_call / eth_estimateGas naming one of the longs (the
    largest, which the keeper tries first) answers a JSON-RPC error: the five others are
    liquidated in the block after the drop.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from eth_keys import keys

from keeper.chain.anvil import free_port
from keeper.replay.driver import User, deposit_all
from tests.integration.test_keeper_faults import WAD, Chain, Keeper

pytestmark = pytest.mark.anvil

DUST_PAIRS = 200
LEVERAGE = 98  # tenths: 9.8x
DROP = 0.94  # ETH falls 6 %
ONE_ARG_CALL = 2 + 8 + 64  # 0x + selector + one address word: liquidate(a), has_positions(a), ...


class RpcProxy:
    """A JSON-RPC proxy on 127.0.0.1 in front of Anvil. Counts every method, and the eth_call /
    eth_estimateGas requests whose calldata is a one-argument call naming a watched account;
    answers those naming an account in `fail` with a JSON-RPC error instead of forwarding."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.watch: set[str] = set()  # lower-case hex without 0x
        self.fail: set[str] = set()
        self.methods: Counter = Counter()
        self.per_account: Counter = Counter()  # watched account -> eth_call / eth_estimateGas count
        self.sent_raw = 0
        self._lock = threading.Lock()
        self._session = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer = proxy._answer(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @staticmethod
    def address_word(address: str) -> str:
        return address.lower().removeprefix("0x").rjust(64, "0")

    def _named(self, request: dict) -> str | None:
        if request.get("method") not in ("eth_call", "eth_estimateGas"):
            return None
        params = request.get("params") or [{}]
        data = (params[0].get("data") or params[0].get("input") or "").lower() if isinstance(params[0], dict) else ""
        if len(data) != ONE_ARG_CALL:
            return None
        word = data[10:]
        return word if word in self.watch else None

    def _answer(self, body: bytes) -> bytes:
        request = json.loads(body)
        for r in request if isinstance(request, list) else [request]:
            with self._lock:
                self.methods[r.get("method")] += 1
                self.sent_raw += r.get("method") == "eth_sendRawTransaction"
        if isinstance(request, dict):
            named = self._named(request)
            if named is not None:
                with self._lock:
                    self.per_account[named] += 1
                if named in self.fail:
                    error = {
                        "jsonrpc": "2.0",
                        "id": request.get("id"),
                        "error": {"code": -32000, "message": "proxy: injected failure for this account"},
                    }
                    return json.dumps(error).encode()
        return self._session.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}, timeout=30
        ).content

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    c = Chain(tmp_path_factory.mktemp("stall"))
    yield c
    c.replay.close()


@pytest.fixture
def fresh(chain):
    chain.reset()
    return chain


def allow_dust(chain: Chain) -> None:
    """Set the minimum position notional to 0 (the deployer holds the risk admin role here)."""
    e = chain.client.engine.functions
    args = (e.max_price_deviation().call(), e.max_funding_rate().call(), e.funding_smoothing().call(), 0)
    h = e.set_trade_params(*args).transact(
        {"from": chain.admin, "gas": 200_000, "maxFeePerGas": 10**13, "maxPriorityFeePerGas": 0}
    )
    chain.mine()
    assert chain.w3.eth.get_transaction_receipt(h)["status"] == 1


def open_pairs(chain: Chain, cash: list[int], first_key: int) -> list[str]:
    """One pair of fresh accounts per entry of `cash` (USDC token units each), trading ETH-PERP
    long against short at 9.8x their cash, all sent at once and mined in a few blocks (automine
    is off). Returns the long sides (the side a fall makes liquidatable)."""
    r = chain.replay
    r._update_fees()
    usd = r.opts.config.settlement_symbol

    def user(n: int) -> User:
        key = n.to_bytes(32, "big")
        return User(keys.PrivateKey(key).public_key.to_checksum_address(), key)

    longs = [user(first_key + 2 * i) for i in range(len(cash))]
    shorts = [user(first_key + 2 * i + 1) for i in range(len(cash))]
    deposits = [(u.address, usd, c) for pair, c in zip(zip(longs, shorts), cash) for u in pair]
    hashes = deposit_all(r._send, chain.client.vault, r.tokens, chain.admin, deposits)
    price = chain.start_prices["ETH"]
    market = chain.dep.markets["ETH-PERP"]
    scale = 10 ** (18 - r.decimals[usd])  # token units -> WAD USD of cash
    for long, short, c in zip(longs, shorts, cash):
        size = c * scale * LEVERAGE // 10 * WAD // price
        ours, our_sig = long.order(market, size, price, chain.dep.chain_id, chain.dep.matching)
        theirs, their_sig = short.order(market, -size, price, chain.dep.chain_id, chain.dep.matching)
        hashes.append(r._send(chain.client.matching.functions.match_orders(ours, our_sig, theirs, their_sig), 600_000))
    while chain.rpc("txpool_status", [])["pending"] != "0x0":
        chain.mine()
    for h in hashes:
        assert chain.w3.eth.get_transaction_receipt(h)["status"] == 1
    return [u.address for u in longs]


def drop_eth(chain: Chain) -> int:
    """Publish ETH 6 % lower in the next block (mined); returns that block."""
    feed = chain.replay.feeds["ETH"]
    answer = int(chain.start_prices["ETH"] * DROP) // 10 ** (18 - chain.dep.feed_decimals["ETH"])
    h = feed.functions.set_answer(answer).transact(
        {"from": chain.admin, "gas": 100_000, "maxFeePerGas": 10**13, "maxPriorityFeePerGas": 0}
    )
    block = chain.mine()
    assert chain.w3.eth.get_transaction_receipt(h)["status"] == 1
    return block


def liquidatable_now(chain: Chain, accounts: list[str]) -> list[str]:
    summaries = chain.client.margin_summaries(accounts, "latest")
    return [a for a, s in zip(accounts, summaries) if s[0] < s[2] and s[0] > 0]


def keeper_transactions(chain: Chain, first: int, last: int) -> list[dict]:
    out = []
    for n in range(first, last + 1):
        for tx in chain.w3.eth.get_block(n, full_transactions=True)["transactions"]:
            if tx["from"].lower() == chain.keeper_address.lower():
                out.append(tx)
    return out


def liquidated_account(chain: Chain, tx) -> str:
    return chain.client.engine.decode_function_input(tx["input"])[1]["account"]


def test_dust_accounts_cost_nothing_and_the_real_liquidation_lands_first(fresh, tmp_path):
    chain = fresh
    allow_dust(chain)
    dust = open_pairs(chain, [1] * DUST_PAIRS, 10_000)
    real = open_pairs(chain, [5_000 * 10**6], 20_000)
    proxy = RpcProxy(chain.replay.rpc_url)
    proxy.watch = {RpcProxy.address_word(a) for a in dust}
    keeper = Keeper(chain, proxy.url, tmp_path / "state", min_profit=None)  # default settings
    keeper.start()
    try:
        keeper.wait(chain.mine())
        start = chain.w3.eth.block_number
        dropped = drop_eth(chain)
        assert liquidatable_now(chain, real) == real and len(liquidatable_now(chain, dust)) == DUST_PAIRS
        stats = keeper.wait(dropped, until=lambda s: s["sent"] >= 1)
        assert stats["sent"] == 1 and stats["liquidatable"] == 1 + DUST_PAIRS and stats["below_gas"] == DUST_PAIRS
        mined_in = chain.mine()
        keeper.wait(mined_in, until=lambda s: s["succeeded"] >= 1)
        events = chain.client.liquidations(start, chain.w3.eth.block_number)
        assert [(ev["account"], ev["block"]) for ev in events] == [
            (real[0], dropped + 1)
        ]  # the first block it could land in
        for _ in range(2):  # later blocks: the dust stays unsimulated
            keeper.wait(chain.mine())
        assert not [
            ev for ev in chain.client.liquidations(start, chain.w3.eth.block_number) if ev["account"] in set(dust)
        ]
        ours = keeper_transactions(chain, start, chain.w3.eth.block_number)
        assert [liquidated_account(chain, tx) for tx in ours] == real  # no transaction for the dust
        assert sum(proxy.per_account.values()) == 0, (
            proxy.per_account
        )  # no eth_call / eth_estimateGas naming a dust account
        assert proxy.methods["eth_sendRawTransaction"] == 1
        print(
            f"\ndefault: {DUST_PAIRS} dust accounts cost 0 per-account calls and 0 gas; keeper RPC calls by method over "
            f"{chain.w3.eth.block_number - start + 1} blocks: {dict(proxy.methods)}"
        )
    finally:
        keeper.stop()
        proxy.close()


def test_always_still_liquidates_dust_but_after_the_real_account(fresh, tmp_path):
    """`--min-profit-usd always` (the old liquidate-all) still liquidates the dust for an operator
    who wants it, and the ranking still gives the real account the first nonce. Measures what 20
    dust accounts cost in that mode (what the default avoids)."""
    chain = fresh
    allow_dust(chain)
    dust = open_pairs(chain, [1] * 20, 10_000)
    real = open_pairs(chain, [5_000 * 10**6], 20_000)
    proxy = RpcProxy(chain.replay.rpc_url)
    proxy.watch = {RpcProxy.address_word(a) for a in dust}
    keeper = Keeper(chain, proxy.url, tmp_path / "state", min_profit="always")
    keeper.start()
    try:
        keeper.wait(chain.mine())
        dropped = drop_eth(chain)
        began = time.monotonic()
        keeper.wait(dropped, until=lambda s: s["sent"] >= 21, timeout=120)
        seconds = time.monotonic() - began
        while chain.rpc("txpool_status", [])["pending"] != "0x0":
            keeper.wait(chain.mine())
        ours = sorted(keeper_transactions(chain, dropped, chain.w3.eth.block_number), key=lambda tx: tx["nonce"])
        assert liquidated_account(chain, ours[0]) == real[0]  # the real account takes the first nonce
        receipts = {tx["hash"]: chain.w3.eth.get_transaction_receipt(tx["hash"]) for tx in ours}
        dust_gas = sum(receipts[tx["hash"]]["gasUsed"] for tx in ours if liquidated_account(chain, tx) in set(dust))
        calls = sum(proxy.per_account.values())
        print(
            f"\nalways: 20 dust accounts cost {calls} per-account eth_call/eth_estimateGas, {dust_gas} gas ({dust_gas // 20} each) "
            f"and {seconds:.1f} s of the block's processing"
        )
        assert calls >= 2 * 20 and dust_gas > 0
    finally:
        keeper.stop()
        proxy.close()


def test_one_account_failing_every_rpc_call_does_not_stop_the_others(fresh, tmp_path):
    chain = fresh
    longs = open_pairs(chain, [20_000 * 10**6] + [5_000 * 10**6] * 5, 30_000)
    bad, others = longs[0], longs[1:]  # the largest reward: the keeper tries it first
    proxy = RpcProxy(chain.replay.rpc_url)
    proxy.watch = proxy.fail = {RpcProxy.address_word(bad)}
    keeper = Keeper(chain, proxy.url, tmp_path / "state", min_profit=None)
    keeper.start()
    try:
        keeper.wait(chain.mine())
        start = chain.w3.eth.block_number
        dropped = drop_eth(chain)
        assert liquidatable_now(chain, longs) == longs
        stats = keeper.wait(dropped, until=lambda s: s["sent"] >= len(others))
        assert stats["sent"] == len(others) and stats["account_errors"] == 1
        calls = proxy.per_account[RpcProxy.address_word(bad)]
        keeper.wait(chain.mine(), until=lambda s: s["succeeded"] >= len(others))
        assert proxy.per_account[RpcProxy.address_word(bad)] == calls  # backoff: no call for it in the next block
        events = chain.client.liquidations(start, chain.w3.eth.block_number)
        assert sorted(ev["account"] for ev in events) == sorted(others)
        assert {ev["block"] for ev in events} == {dropped + 1}  # all five in the block after the drop
        assert proxy.per_account[RpcProxy.address_word(bad)] >= 1
        failures = [
            line for line in keeper.log_lines() if line["message"].startswith(f"liquidation of {bad} failed (rpc_error")
        ]
        assert failures and failures[0]["level"] == "WARNING"
        keeper.wait(chain.mine())  # the block after: tried again (and fails again)
        assert proxy.per_account[RpcProxy.address_word(bad)] > calls
        assert keeper.stats()["account_errors"] == 2
    finally:
        keeper.stop()
        proxy.close()
