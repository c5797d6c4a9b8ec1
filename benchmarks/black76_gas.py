"""Gas per call of the in-house exp, ln, normal CDF and Black-76 (contracts/lib/black76.vy),
measured in titanoboa, next to the figures of lyra-utils' `Black76.sol` / `FixedPointMathLib`.

    python -m benchmarks.black76_gas [--samples 2000] [--seed 11] [--json]

Inputs are drawn at random over each function's supported range (the module docstring). "call"
is the execution gas of one external call of the wrapper (dispatch and ABI decoding included,
no 21,000 transaction base, no calldata); "internal" subtracts the same overhead measured on an
empty function with the same signature, i.e. roughly what an importing contract pays.

Lyra's figures are whole Foundry tests from its `.gas-snapshot` (several assertions each), so
they are upper bounds of a single call; "Black76 per call+put" is testPrices (67,226 gas for 9
pricings) / 9. Prints figures; asserts nothing. With --json, also writes them to
reports/black76-gas.json (the docs' table is rendered from there by bin/figures).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from pathlib import Path

import boa
from rich.console import Console
from rich.table import Table

from keeper.units import WAD

YEAR = 365 * 86400
SOURCE = Path(__file__).resolve().parents[1] / "contracts" / "lib" / "black76.vy"
REPORT = Path(__file__).resolve().parents[1] / "reports" / "black76-gas.json"

# Empty functions with the wrappers' signatures: the per-call overhead to subtract.
EMPTY = """
# pragma version 0.4.3
@external
@pure
def i(x: int256) -> uint256:
    return 0
@external
@pure
def u(x: uint256) -> int256:
    return 0
@external
@pure
def b(f: uint256, k: uint256, s: uint256, t: uint256) -> (uint256, uint256):
    return 0, 0
"""

LYRA = {
    "exp_wad": ("testExp", 20_217),
    "ln_wad": ("testLn", 14_628),
    "norm_cdf": ("testStdNormalCDF", 18_850),
    "black76": ("testPrices / 9", 67_226 // 9),
}


def _gas(contract, fn, *args) -> int:
    fn(*args)
    return contract._computation.get_gas_used()


def _black76_inputs(rng: random.Random) -> tuple[int, int, int, int]:
    while True:
        f = 10 ** rng.uniform(-6, 12)
        k = f * math.exp(rng.uniform(-8, 8))
        sigma = 10 ** rng.uniform(-2, math.log10(5))
        tau = rng.randint(60, 4 * YEAR)
        if 1e-6 <= k <= 1e12 and sigma * math.sqrt(tau / YEAR) <= 10:
            return int(f * WAD), int(k * WAD), int(sigma * WAD), tau


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--json", action="store_true", help=f"also write the figures to {REPORT.relative_to(REPORT.parents[1])}"
    )
    args = ap.parse_args()
    rng = random.Random(args.seed)
    b76 = boa.load(str(SOURCE))
    empty = boa.loads(EMPTY)
    overhead = {
        "exp_wad": _gas(empty, empty.i, 1),
        "ln_wad": _gas(empty, empty.u, 1),
        "norm_cdf": _gas(empty, empty.i, 1),
        "black76": _gas(empty, empty.b, 1, 1, 1, 1),
    }
    samples = {
        "exp_wad": [_gas(b76, b76.exp_wad, rng.randint(-42 * WAD, 135 * WAD)) for _ in range(args.samples)],
        "ln_wad": [_gas(b76, b76.ln_wad, rng.randint(1, 2 ** rng.randint(1, 256) - 1)) for _ in range(args.samples)],
        "norm_cdf": [_gas(b76, b76.norm_cdf, int(rng.uniform(-10, 10) * WAD)) for _ in range(args.samples)],
        "black76": [_gas(b76, b76.black76, *_black76_inputs(rng)) for _ in range(args.samples)],
    }
    near_money = [
        _gas(
            b76,
            b76.black76,
            2000 * WAD,
            int(2000 * WAD * rng.uniform(0.7, 1.3)),
            int(rng.uniform(0.3, 1.5) * WAD),
            rng.randint(86400, 180 * 86400),
        )
        for _ in range(args.samples)
    ]

    table = Table(title=f"gas per call, {args.samples} random inputs each (titanoboa)")
    for col in ("function", "call mean", "call max", "internal mean", "lyra-utils test", "lyra gas"):
        table.add_column(col, justify="right" if col != "function" else "left")
    for name, gas in samples.items():
        test, lyra = LYRA[name]
        mean = statistics.fmean(gas)
        table.add_row(name, f"{mean:,.0f}", f"{max(gas):,}", f"{mean - overhead[name]:,.0f}", test, f"{lyra:,}")
    mean = statistics.fmean(near_money)
    table.add_row(
        "black76 (ETH, strikes 0.7-1.3 F)",
        f"{mean:,.0f}",
        f"{max(near_money):,}",
        f"{mean - overhead['black76']:,.0f}",
        "testPrices / 9",
        f"{LYRA['black76'][1]:,}",
    )
    console = Console(width=110)
    console.print(table)
    console.print(f"16 options (one margin check): about {16 * mean:,.0f} gas of pricing")
    if args.json:
        rows = samples | {"black76_near_money": near_money}
        report = {
            "samples": args.samples,
            "seed": args.seed,
            "functions": {
                name: {
                    "call_mean": round(statistics.fmean(gas)),
                    "call_max": max(gas),
                    "internal_mean": round(statistics.fmean(gas) - overhead[name.removesuffix("_near_money")]),
                    "lyra_test": LYRA[name.removesuffix("_near_money")][0],
                    "lyra_gas": LYRA[name.removesuffix("_near_money")][1],
                }
                for name, gas in rows.items()
            },
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
