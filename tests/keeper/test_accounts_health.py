"""`keeper accounts`: every account's margin at one block, found as the keeper finds accounts,
then filtered, sorted and printed (table or JSON) apart from the chain reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keeper.chain.account import AccountHealth, read_health, select_health
from keeper.chain.client import ProtocolLog
from keeper.chain.deployment import Deployment
from keeper.chain.types import MarginSummary
from keeper.cli import _health_json, _health_table
from keeper.units import MAX_UINT256, WAD

A, B, C, D = ("0x" + c * 40 for c in "abcd")


def row(address: str, equity: float, im: float, mm: float, health: int | None = None) -> AccountHealth:
    e, i, m = int(equity * WAD), int(im * WAD), int(mm * WAD)
    hf = health if health is not None else (MAX_UINT256 if m == 0 else max(e, 0) * WAD // m)
    return AccountHealth(address, 7, MarginSummary(e, i, m, hf))


ROWS = [
    row(A, 1_000, 200, 100),  # health 10
    row(B, 50, 200, 100),  # 0.5, liquidatable
    row(C, 500, 0, 0),  # nothing to maintain: health max
    row(D, -10, 400, 200),  # 0, liquidatable
]


def addresses(rows):
    return [r.address for r in rows]


def test_sorted_by_health_riskiest_first_nothing_to_maintain_last():
    assert addresses(select_health(ROWS)) == [D, B, A, C]


@pytest.mark.parametrize(
    "sort, expected",
    [("equity", [A, C, B, D]), ("mm", [D, A, B, C]), ("address", [A, B, C, D]), ("health", [D, B, A, C])],
)
def test_sorts(sort, expected):
    assert addresses(select_health(ROWS, sort)) == expected


def test_liquidatable_only_and_limit():
    assert addresses(select_health(ROWS, liquidatable_only=True)) == [D, B]
    assert addresses(select_health(ROWS, "equity", limit=2)) == [A, C]
    assert addresses(select_health(ROWS, "mm", limit=1, liquidatable_only=True)) == [D]
    with pytest.raises(ValueError, match="sort must be one of"):
        select_health(ROWS, "size")


def test_liquidatable_is_equity_below_maintenance_margin():
    assert [r.liquidatable for r in ROWS] == [False, True, False, True]
    assert not row(A, 100, 200, 100).liquidatable  # equal to MM: not yet


def test_json_is_one_array_of_wad_integers_as_keeper_account():
    out = _health_json(select_health(ROWS, "address"))
    assert [o["address"] for o in out] == [A, B, C, D]
    assert out[1] == {
        "address": B,
        "block": 7,
        "equity": 50 * WAD,
        "initial_margin": 200 * WAD,
        "maintenance_margin": 100 * WAD,
        "health_factor": WAD // 2,
        "liquidatable": True,
    }
    assert out[2]["health_factor"] == MAX_UINT256
    json.dumps(out)  # plain JSON types


def test_table_counts_all_accounts_and_says_how_many_are_shown():
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(_health_table(select_health(ROWS, limit=2), ROWS, 7))
    text = console.export_text()
    assert "4 accounts at block 7, 2 liquidatable (showing 2)" in text
    assert D in text and B in text and A not in text
    assert "-10.00" in text and "0.5000" in text


class FakeEth:
    def __init__(self):
        self.block_number = 12

    def get_block(self, n):
        return {"number": n, "hash": "0x" + f"{n:064x}", "parentHash": "0x" + f"{n - 1:064x}", "timestamp": 1000 + n}


class FakeClient:
    """Logs of three accounts (one twice, one only liquidated: not an account of its own)."""

    def __init__(self):
        self.w3 = type("W3", (), {"eth": FakeEth()})()
        self.deployment = Deployment(31337, A, A, A, A, 6)
        self.asked: list[tuple[list[str], int]] = []

    def protocol_logs(self, start, end):
        logs = [("Deposit", B, 3), ("PositionChanged", A, 5), ("Deposit", B, 6), ("Liquidation", C, 9)]
        return [ProtocolLog(e, a, n, "0x", "0x", {}) for e, a, n in logs if start <= n <= end]

    def margin_summaries(self, accounts, block):
        self.asked.append((list(accounts), block))
        return [MarginSummary(i, 0, 0, MAX_UINT256) for i, _ in enumerate(accounts)]


def test_read_health_finds_accounts_from_events_and_reads_at_one_block():
    client = FakeClient()
    rows = read_health(client, 2, 12)
    assert client.asked == [([A, B], 12)]
    assert [(r.address, r.block, r.margin.equity) for r in rows] == [(A, 12, 0), (B, 12, 1)]
    assert read_health(client, 6, 12)[0].address == B  # scanning from a later block


def keeper(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keeper", *args], capture_output=True, text=True, timeout=60)


def test_bad_options_are_one_line():
    from tests.keeper.test_cli_errors import assert_one_line_error

    out = keeper("accounts", "--rpc", "http://127.0.0.1:9", "--manifest", "m.json", "--sort", "size")
    assert_one_line_error(out, "--sort", "size")
    out = keeper("accounts", "--rpc", "http://127.0.0.1:9", "--manifest", "m.json", "--limit", "0")
    assert_one_line_error(out, "--limit")
    out = keeper("accounts", "--rpc", "http://127.0.0.1:9", "--manifest", "nope.json")
    assert_one_line_error(out, "not found")


def test_unreachable_rpc_is_one_line(tmp_path):
    from tests.keeper.test_cli_errors import assert_one_line_error

    manifest = tmp_path / "deployment.json"
    manifest.write_text(json.dumps({"chain_id": 31337, "settlement_decimals": 6, "oracle": A, "vault": A,
                                    "engine": A, "settlement_token": A}))  # fmt: skip
    out = keeper("accounts", "--rpc", "http://127.0.0.1:9", "--manifest", str(manifest), "--json")
    assert_one_line_error(out, "cannot reach RPC")
