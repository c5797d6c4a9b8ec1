"""The replay's timeline figures and its picture, without a chain: the keeper's inventory from
position events, who held a position when, and the PNG drawn from a report."""

from __future__ import annotations

import struct

import pytest

from keeper.replay.plot import PlotError, plot_report
from keeper.replay.timeline import TimelineRow, backstop_figures, flat_before, inventory_by_block
from keeper.units import WAD

ETH, BTC = 0, 1  # price ids
PRICE = {("engine", 0): ETH, ("engine", 1): BTC, ("option", 0): ETH}


def row(block: int, eth: float, btc: float) -> TimelineRow:
    wad = (int(eth * WAD), int(btc * WAD))
    return TimelineRow(block, 1_584_000_000 + 3600 * block, {"ETH": eth, "BTC": btc}, 0, 0.0, 0.0, wad)


def test_inventory_is_gross_notional_at_each_blocks_index():
    k = "0xkeeper"
    changes = [
        (11, 0, k, ("engine", 0), 10 * WAD),  # long 10 ETH
        (12, 3, k, ("engine", 1), -WAD // 2),  # short 0.5 BTC: counts as gross
        (12, 1, k, ("engine", 0), 4 * WAD),  # earlier in block 12: ETH down to 4
        (14, 0, k, ("engine", 0), 0),  # closed
        (14, 2, k, ("option", 0), -3 * WAD),  # short 3 ETH options: the underlying they control
    ]
    rows = [row(10, 200, 8000), row(11, 150, 6000), row(12, 100, 5000), row(13, 120, 5000), row(14, 110, 5000)]
    assert inventory_by_block(changes, rows, PRICE) == [0.0, 1500.0, 400.0 + 2500.0, 480.0 + 2500.0, 330.0 + 2500.0]


def test_inventory_ignores_an_instrument_without_a_price():
    changes = [(1, 0, "0xk", ("engine", 7), WAD)]
    assert inventory_by_block(changes, [row(1, 100, 1000)], PRICE) == [0.0]


def test_flat_before_a_log_uses_only_earlier_changes_of_that_account():
    a, b = "0xa", "0xb"
    changes = [(5, 0, a, ("engine", 0), WAD), (7, 2, a, ("engine", 0), 0), (7, 4, b, ("option", 0), WAD)]
    assert flat_before(changes, a, 5, 0)  # nothing yet
    assert not flat_before(changes, a, 6, 0)  # long since block 5
    assert not flat_before(changes, a, 7, 1)  # the close comes later in block 7
    assert flat_before(changes, a, 7, 3)  # closed just before
    assert flat_before(changes, b, 7, 4) and not flat_before(changes, b, 8, 0)


def report(blocks: int = 30) -> dict:
    timeline = [
        {
            "block": 100 + i,
            "timestamp": 1_583_971_200 + 3600 * i,
            "prices": {"ETH": 200.0 - 3 * i, "BTC": 8000.0 - 100 * i},
            "below_mm": max(0, 10 - abs(i - 12)),
            "liquidations": 3 if i in (13, 14) else 0,
            "insurance_fund_usd": 1_000_000.0 - 2_000 * i,
            "bad_debt_usd": 0.0,
            "keeper_inventory_usd": 50_000.0 * min(i, 14),
        }
        for i in range(blocks)
    ]
    return {
        "accounts": 40,
        "liquidations": 6,
        "missed_liquidations": 0,
        "max_blocks_to_liquidate": 1,
        "bad_debt_usd": 0.0,
        "insurance_fund_start_usd": 1_000_000.0,
        "socialized_loss_usd": 0.0,
        "flat_account_losses_usd": 0.0,
        "keeper_max_inventory_usd": 700_000.0,
        "adl_events": 0,
        "adl_notional_usd": 0.0,
        "price_path": {"start": "2020-03-11T00:00:00Z", "end": "2020-03-12T05:00:00Z"},
        "timeline": timeline,
    }


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_picture_is_a_png_of_the_stated_size(tmp_path):
    out = plot_report(report(), tmp_path / "sub" / "crash.png")
    assert out == tmp_path / "sub" / "crash.png"
    assert png_size(out) == (1100, 1200)
    assert 20_000 < out.stat().st_size < 1_000_000


def test_a_report_without_a_timeline_cannot_be_drawn(tmp_path):
    old = report()
    del old["timeline"]
    with pytest.raises(PlotError, match="no timeline"):
        plot_report(old, tmp_path / "x.png")


def test_an_unwritable_picture_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(PlotError, match="cannot write"):
        plot_report(report(), tmp_path / "file" / "x.png")


def test_backstop_figures_are_equity_minus_seed_and_the_largest_exposure():
    got = backstop_figures(1_956_730 * WAD + WAD // 4, 2_000_000, [None, 0.0, 250_000.5, 199_000.0])
    assert got == {
        "backstop_seed_usd": 2_000_000.0,
        "backstop_pnl_usd": -43_269.75,
        "backstop_max_exposure_usd": 250_000.5,
        "backstop_equity_end_usd": 1_956_730.25,
    }
    # seeded but never used: no P&L, no exposure
    assert backstop_figures(5 * WAD, 5, [0.0, 0.0])["backstop_pnl_usd"] == 0.0
    assert backstop_figures(0, 0, [])["backstop_max_exposure_usd"] == 0.0


def test_the_picture_draws_the_backstop_vault(tmp_path):
    r = report()
    for i, entry in enumerate(r["timeline"]):
        entry["backstop_equity_usd"] = 2_000_000.0 - 1_000 * i
        entry["backstop_exposure_usd"] = 40_000.0 * min(i, 14)
        entry["keeper_inventory_usd"] = 0.0
    r.update(backstop_pnl_usd=-29_000.0, backstop_max_exposure_usd=560_000.0, routed_liquidations=6)
    out = plot_report(r, tmp_path / "vault.png")
    assert png_size(out) == (1100, 1200)
