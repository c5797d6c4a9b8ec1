"""`python -m keeper.backtest_cli`: the grid backtest of :mod:`keeper.risk.backtest` over the daily
ETH / BTC history, printed as tables (until 0.3.0 `python -m keeper.risk.backtest`; the risk
package does no I/O now, so the command lives with the other command-line modules).

The numbers come from `keeper.risk.backtest` (pure); this module loads the inputs
(`keeper.config.load_scenario_params`, `keeper.marketdata.daily.load_daily_history`) and renders.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import click
import numpy as np

from keeper.config import DEFAULT_PM_CONFIG, load_scenario_params
from keeper.errors import ConfigError, PriceDataError
from keeper.marketdata.daily import load_daily_history
from keeper.marketdata.prices import parse_utc
from keeper.risk.backtest import DAY, DailyHistory, backtest_days, run_backtest, var_rows
from keeper.risk.scenarios import ScenarioParams

__all__ = ["main", "var_table"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    show_default="$KEEPER_DATA_DIR, else ../shared/data from the working directory",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=DEFAULT_PM_CONFIG,
    show_default="config/portfolio_margin.yaml",
)
@click.option("--start", default=None, help="first day, UTC (e.g. 2021-01-01)")
@click.option("--end", default=None, help="end day, exclusive, UTC")
def main(data_dir: Path, config_path: Path, start: str | None, end: str | None) -> None:
    """Count the days real ETH and BTC moves exceeded the grid's maintenance margin."""
    from rich.console import Console
    from rich.table import Table

    try:
        params = load_scenario_params(config_path)
        lo = parse_utc(start) if start else None
        hi = parse_utc(end) if end else None
        history = load_daily_history(data_dir)
    except (ConfigError, PriceDataError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    days = backtest_days(history, lo, hi)
    if days.size == 0:
        click.echo("error: no day of the daily history is inside --start .. --end", err=True)
        sys.exit(2)
    rows = run_backtest(history, params, lo, hi)
    first, last = (datetime.fromtimestamp(int(history.timestamps[i]), timezone.utc).date() for i in (days[0], days[-1]))
    table = Table(
        title=f"Portfolio MM vs realised losses, daily ETH and BTC {first} .. {last} "
        f"(spot +-{params.spot_range:.0%}, correlation {params.correlation:g})"
    )
    for col in (
        "book",
        "underlying",
        "mean MM / notional",
        "1-day days",
        "1-day exceed",
        "rate",
        "2-day days",
        "2-day exceed",
        "rate",
        "max 1-day loss / MM",
    ):
        table.add_column(col, justify="left" if col in ("book", "underlying") else "right")
    for r in rows:
        table.add_row(
            r.book,
            r.underlying,
            f"{r.mean_mm:.1%}",
            str(r.days[1]),
            str(r.exceedances[1]),
            f"{r.rate(1):.2%}",
            str(r.days[2]),
            str(r.exceedances[2]),
            f"{r.rate(2):.2%}",
            f"{r.worst_ratio:.2f}",
        )
    console = Console(width=None if sys.stdout.isatty() else 170)  # a file or pipe gets the whole table
    console.print(table)
    t = days[days + 1 < history.timestamps.size]
    for j, s in enumerate(history.symbols):
        r = history.prices[t + 1, j] / history.prices[t, j] - 1.0
        ok = history.timestamps[t + 1] - history.timestamps[t] == DAY
        if not ok.any():
            continue
        beyond = int((np.abs(r[ok]) > params.spot_range).sum())
        console.print(
            f"{s}: {ok.sum()} daily moves, largest fall {r[ok].min():.1%}, rise {r[ok].max():.1%}, "
            f"{beyond} beyond +-{params.spot_range:.0%}"
        )
    console.print(var_table(history, params, days))


def var_table(history: DailyHistory, params: ScenarioParams, days: np.ndarray):
    """A rich table of :func:`keeper.risk.backtest.var_rows`: the reference books opened on the
    window's last day, their MM against 1-day historical VaR 99% / ES 97.5% and delta-gamma-normal
    VaR 99%, as fractions of notional."""
    from rich.table import Table

    t = int(days[-1])
    table = Table(
        title=f"Books opened {datetime.fromtimestamp(int(history.timestamps[t]), timezone.utc).date()}: "
        "MM vs 1-day VaR / ES (fractions of notional)"
    )
    for col in ("book", "underlying", "MM", "hist. VaR 99%", "hist. ES 97.5%", "delta-gamma VaR 99%", "days"):
        table.add_column(col, justify="left" if col in ("book", "underlying") else "right")
    for r in var_rows(history, params, days):
        table.add_row(
            r.book,
            r.underlying,
            f"{r.mm:.1%}",
            f"{r.hist_var:.1%}",
            f"{r.hist_es:.1%}",
            f"{r.delta_gamma_var:.1%}",
            str(r.n_days),
        )
    return table


if __name__ == "__main__":
    main()
