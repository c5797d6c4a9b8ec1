"""The picture of a replay: how the protocol rode the crash, block by block, from the report's
`timeline` (keeper.replay.timeline). Five panels against the price path's time (UTC):

1. index prices, each normalized to 1 at the start (the legend gives start and low in USD);
2. accounts below maintenance margin at the end of each block;
3. liquidations per block (auto-deleveraging events: none in this protocol version, said in
   the legend);
4. the insurance fund, outstanding bad debt and the backstop vault's equity, USD (a deployment
   without a vault says so in the legend);
5. the keeper's inventory: gross notional of the positions its liquidations left on its own
   account, and the backstop vault's exposure (the gross notional of the positions it took
   over), USD at each block's index.

Drawn with matplotlib's non-interactive Agg backend; nothing is shown on screen.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from keeper.errors import KeeperError


class PlotError(KeeperError, ValueError):
    """The report cannot be drawn (no timeline) or the file cannot be written."""


def plot_report(report: dict[str, Any], path: str | Path, *, dpi: int = 100) -> Path:
    """Write the PNG of `report` (a `keeper replay` report with a `timeline`) to `path` (parent
    folders are created). The image is 11 x 12 inches at `dpi` (1100 x 1200 pixels at 100).
    Raises PlotError naming the problem (no timeline; the file cannot be written)."""
    timeline = report.get("timeline")
    if not isinstance(timeline, list) or not timeline:
        raise PlotError("the report has no timeline to draw (written by an older keeper replay?)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import matplotlib.ticker as mticker

    times = [datetime.fromtimestamp(int(r["timestamp"]), tz=timezone.utc) for r in timeline]
    symbols = list(timeline[0]["prices"])
    fig, axes = plt.subplots(5, 1, figsize=(11, 12), sharex=True, height_ratios=[3, 2, 2, 3, 2])
    prices_ax, below_ax, liq_ax, money_ax, inventory_ax = axes

    for symbol in symbols:
        series = [float(r["prices"][symbol]) for r in timeline]
        start = series[0] or 1.0
        prices_ax.plot(
            times,
            [p / start for p in series],
            label=_text(f"{symbol}: ${series[0]:,.2f} at the start, low ${min(series):,.2f}"),
        )
    prices_ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
    prices_ax.set_ylabel("index price\n(1 = start)")
    prices_ax.legend(loc="lower left", fontsize=9)

    accounts = report.get("accounts")
    below_ax.step(times, [int(r["below_mm"]) for r in timeline], where="post", color="tab:red")
    below_ax.set_ylabel("accounts\nbelow MM")
    if accounts:
        below_ax.set_title(f"of {accounts:,} accounts", fontsize=9, loc="right")
    below_ax.set_ylim(bottom=0)

    width = _bar_width(times)
    liq_ax.bar(times, [int(r["liquidations"]) for r in timeline], width=width, color="tab:purple", label="liquidations")
    adl_counts = [int(r.get("adl_events") or 0) for r in timeline]
    if any(adl_counts):
        liq_ax.bar(times, adl_counts, width=width, bottom=[int(r["liquidations"]) for r in timeline],
                   color="tab:orange", label="ADL events (counterparties deleveraged)")  # fmt: skip
    else:
        liq_ax.plot([], [], " ", label="ADL events: none")
    liq_ax.set_ylabel("per block")
    liq_ax.legend(loc="upper left", fontsize=9, ncol=2)

    money_ax.step(
        times,
        [float(r["insurance_fund_usd"]) for r in timeline],
        where="post",
        label="insurance fund",
        color="tab:green",
    )
    money_ax.step(
        times,
        [float(r["bad_debt_usd"]) for r in timeline],
        where="post",
        label="bad debt (outstanding)",
        color="tab:red",
    )
    if not _vault_step(money_ax, times, timeline, "backstop_equity_usd", "backstop vault equity"):
        money_ax.plot([], [], " ", label="backstop vault equity: no vault in this deployment")
    money_ax.set_ylabel("USD")
    money_ax.legend(loc="upper left", fontsize=9, ncol=2)

    inventory = [float(r.get("keeper_inventory_usd") or 0.0) for r in timeline]
    inventory_ax.step(times, inventory, where="post", color="tab:blue", label="keeper inventory (gross notional)")
    _vault_step(inventory_ax, times, timeline, "backstop_exposure_usd", "backstop vault exposure (gross notional)")
    inventory_ax.set_ylabel("inventory")
    inventory_ax.legend(loc="upper left", fontsize=9, ncol=2)
    for ax in (money_ax, inventory_ax):
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: _text(_usd(v))))
    for ax in (liq_ax, money_ax, inventory_ax):  # room above the data for the legend
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1.0) * 1.45)
    inventory_ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
    inventory_ax.set_xlabel("UTC (the price path's time)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.autofmt_xdate()
    fig.suptitle(_text(_title(report)), fontsize=12)
    fig.text(0.5, 0.005, _text(_summary(report)), ha="center", va="bottom", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")
    except OSError as e:
        raise PlotError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path


def _bar_width(times: list[datetime]) -> float:
    """Bar width in days: most of the typical (median) gap between two blocks' times."""
    gaps = sorted((b - a).total_seconds() for a, b in zip(times, times[1:]) if b > a)
    return 0.8 * (gaps[len(gaps) // 2] if gaps else 3600.0) / 86400


def _text(text: str) -> str:
    """`text` with dollar signs shown as such (matplotlib reads $...$ as mathematics)."""
    return text.replace("$", r"\$")


def _usd(value: float, _position: object = None) -> str:
    if value < 0:
        return "-" + _usd(-value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"${value / limit:,.{1 if abs(value) < 10 * limit else 0}f}{suffix}"
    return f"${value:,.0f}"


def _title(report: dict[str, Any]) -> str:
    path = report.get("price_path") or {}
    fund = report.get("insurance_fund_start_usd")
    fund_text = "" if fund is None else f", insurance fund {_usd(float(fund))} at the start"
    return (
        f"Replay {path.get('start', '?')} -> {path.get('end', '?')}: {report.get('accounts', '?')} accounts{fund_text}"
    )


def _summary(report: dict[str, Any]) -> str:
    def money(key: str) -> str:
        value = report.get(key)
        return "-" if value is None else _usd(float(value))

    return (
        f"liquidations {report.get('liquidations', '-')}, missed {report.get('missed_liquidations', '-')}, "
        f"max blocks to liquidate {report.get('max_blocks_to_liquidate', '-')}; bad debt at the end {money('bad_debt_usd')}, "
        f"socialized {money('socialized_loss_usd')}, flat-account losses {money('flat_account_losses_usd')}; "
        f"keeper max inventory {money('keeper_max_inventory_usd')}; "
        f"ADL events {report.get('adl_events', '-')} ({money('adl_notional_usd')})"
        + (
            f"\nbackstop vault: P&L {money('backstop_pnl_usd')}, largest exposure {money('backstop_max_exposure_usd')}; "
            f"liquidations routed to it {report.get('routed_liquidations', '-')}, direct {report.get('direct_liquidations', '-')}"
            if report.get("backstop_pnl_usd") is not None
            else ""
        )
    )


def _vault_step(ax: Any, times: list[datetime], timeline: list[dict[str, Any]], key: str, label: str) -> bool:
    """Draw the backstop vault's series `key` of the timeline on `ax` (orange steps); False,
    drawing nothing, when the deployment has no vault (every value None)."""
    values = [r.get(key) for r in timeline]
    if all(v is None for v in values):
        return False
    ax.step(times, [float(v or 0.0) for v in values], where="post", color="tab:orange", label=label)
    return True
