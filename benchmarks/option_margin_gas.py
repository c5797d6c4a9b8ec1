"""Gas of one margin check of an account holding N options, next to Derive (Lyra v2)'s standard
manager (SRM), in titanoboa.

    python -m benchmarks.option_margin_gas [--sizes 1,4,8,16,32] [--json]

For each N a fresh account sells N distinct option series (calls and puts, two expiries, fresh
vols from the VolFeed) and holds nothing else; the figures are the execution gas of one call
(cold storage, no 21,000 transaction base, no calldata) of
  - `MarginEngine.margin_summary`: the full check (vault cash and collateral, the engine's own
    positions, then `OptionMarket.margin_contribution` with one Black-76 per option);
  - `MarginEngine.is_liquidatable`: the same, compared with the maintenance margin;
  - `OptionMarket.margin_contribution`: the options part alone.
Lyra's figures are from derivexyz/v2-core PR #272 "misc: metrics" (SRM margin check, 1 market,
1 expiry: 16 options 966K, 32 options 2,494K; see ../shared/anchors/protocols.md 1.6).
Prints figures; asserts nothing. With --json, also writes them to reports/option-margin-gas.json
(the docs' table is rendered from there by bin/figures).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import boa
from rich.console import Console
from rich.table import Table

from tests.boa_protocol import WAD, BoaProtocol, OptionsKit

DAY = 86400
LYRA_SRM = {16: 966_000, 32: 2_494_000}
REPORT = Path(__file__).resolve().parents[1] / "reports" / "option-margin-gas.json"


def _series(kit: OptionsKit, n: int) -> list[int]:
    """n distinct series on ETH: strikes 1,500-2,600 in steps of 100, calls and puts, 30 and 60 days."""
    t = boa.env.evm.patch.timestamp
    expiries = (t + 30 * DAY, t + 60 * DAY)
    for expiry in expiries:
        kit.set_vol(0, expiry, 8 * WAD // 10, -WAD // 5)
    out = []
    for i in range(n):
        strike = (1500 + 100 * (i % 12)) * WAD
        expiry = expiries[(i // 12) % 2]
        is_call = (i // 24) % 2 == 0
        out.append(kit.list(0, strike, expiry, is_call))
    return out


def _gas(contract, fn, *args) -> int:
    boa.env.evm.reset_access_counters()  # titanoboa keeps slots warm across calls: start cold
    fn(*args)
    return contract._computation.get_gas_used()


def measure(sizes: list[int]) -> list[tuple[int, int, int, int]]:
    p = BoaProtocol.deploy()
    kit = OptionsKit.deploy(p)
    series = _series(kit, max(sizes))
    states = kit.market.series_states()
    rows = []
    for n in sizes:
        # fresh accounts, no anchor: resetting the access counters inside one breaks its revert
        seller, buyer = p.new_user(), p.new_user()
        p.deposit_usd(seller, 10_000_000)
        p.deposit_usd(buyer, 10_000_000)
        for s in series[:n]:
            kit.trade(buyer, seller, s, WAD, states[s].mark)
        prices = p.oracle.index_prices()
        engine = _gas(p.engine, p.engine.margin_summary, seller.address)
        lens = _gas(p.engine, p.engine.is_liquidatable, seller.address)
        options = _gas(kit.market, kit.market.margin_contribution, seller.address, prices)
        rows.append((n, engine, lens, options))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,4,8,16,32", help="comma-separated numbers of options (<= 32)")
    ap.add_argument("--json", action="store_true", help="also write the figures to reports/option-margin-gas.json")
    args = ap.parse_args()
    try:
        sizes = sorted({int(x) for x in args.sizes.split(",")})
    except ValueError:
        ap.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if not sizes or sizes[0] < 1 or sizes[-1] > 32:
        ap.error("--sizes: each number of options must be in [1, 32] (MAX_ACCOUNT_SERIES)")
    table = Table(title="gas of one margin check, N short options (titanoboa, execution gas, cold)")
    for col in ("options", "engine.margin_summary", "engine.is_liquidatable", "options part", "per option", "Lyra SRM"):
        table.add_column(col, justify="right")
    rows = measure(sizes)
    for n, engine, lens, options in rows:
        lyra = f"{LYRA_SRM[n]:,}" if n in LYRA_SRM else "-"
        table.add_row(str(n), f"{engine:,}", f"{lens:,}", f"{options:,}", f"{options // n:,}", lyra)
    Console(width=140).print(table)
    if args.json:
        report = {
            "rows": [
                {
                    "options": n,
                    "margin_summary": engine,
                    "is_liquidatable": lens,
                    "options_part": options,
                    "derive_srm": LYRA_SRM.get(n),
                }
                for n, engine, lens, options in rows
            ]
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
