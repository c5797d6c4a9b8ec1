"""Options with the protocol: the `options:` config section, deployment (resumable, wired,
verified, carried by the manifest), signed vol posting, and the replay with option books on real
data around 2020-03-12 (vols signed every step, option legs traded, the keeper attesting
portfolio margin and liquidating), checked against the issue's bounds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.client import connect
from keeper.chain.deploy import Web3Backend, deploy_to_manifest
from keeper.chain.manifest import load_manifest
from keeper.chain.verify import mismatches, verify_deployment
from keeper.chain.volfeed import VolPostError, post_vols, vol_update
from keeper.config import ConfigError, load_config
from keeper.marketdata.prices import align, load_price_csv, parse_utc
from keeper.replay import option_books
from keeper.replay.driver import Replay, ReplayError, ReplayOptions
from keeper.replay.option_books import OptionFill, dev_keys
from keeper.replay.population import OPTION_KINDS, trade_size
from keeper.units import WAD
from tests.conftest import DATA_DIR, data_file

OPTIONS_CONFIG = Path(__file__).resolve().parents[2] / "config" / "options.yaml"
ADMIN = DEV_ACCOUNTS[0][0]


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(OPTIONS_CONFIG.read_text())
    raw["extends"] = str(OPTIONS_CONFIG.parent / raw["extends"])  # the base stays beside the original
    mutate(raw["options"])
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.update(extra=1), "options: unknown key 'extra'"),
        (lambda o: o["series"][0].update(underlying="SOL"), "options.series[0]: unknown underlying 'SOL'"),
        (
            lambda o: o["series"][0].update(strikes=[1.0, 11]),
            "options.series[0] ETH: strikes: must be a non-empty list",
        ),
        (lambda o: o["series"][0].update(strikes=[1.0, 1.0]), "strikes: duplicate value"),
        (
            lambda o: o["series"][0].update(expiry_days=[800]),
            "expiry_days: must be a non-empty list of days in (0, 730]",
        ),
        (lambda o: o["series"][1].update(underlying="ETH"), "options.series: duplicate 'ETH'"),
        (
            lambda o: o["series"][0].update(strikes=[round(0.2 + 0.01 * i, 2) for i in range(130)]),
            "the option market lists at most 256",
        ),
        (lambda o: o["risk"].update(short_mm_rate=0.2), "options.risk: need 0.01 <= short_mm_rate <= short_im_floor"),
        (lambda o: o["risk"].update(long_mm_haircut=0.95), "long_im_haircut <= long_mm_haircut <= 0.9"),
        (lambda o: o["vol_feed"].update(threshold=3), "options.vol_feed: threshold: must be an integer in [1, 2]"),
        (lambda o: o["vol_feed"]["signers"].append(o["vol_feed"]["signers"][0]), "options.vol_feed signers: duplicate"),
        (
            lambda o: o["vol_feed"].update(signers=["0x123"]),
            "options.vol_feed signers[0]: signers: must be a 0x-prefixed",
        ),
        (lambda o: o["vol_feed"].update(min_atm_vol=3.0), "need 0.01 <= min_atm_vol < max_atm_vol"),
        (lambda o: o["attestation"].update(margin_floor=0.1), "margin_floor: must be in [0.2, 1]"),
        (lambda o: o["attestation"].update(price_band=0.2), "price_band: must be in (0, 0.1]"),
        (lambda o: o["attestation"].update(max_validity=10), "max_validity: must be an integer in [60, 86400] seconds"),
        (lambda o: o.pop("attestation"), "options: missing 'attestation'"),
        (
            lambda o: o["attestation"].update(scenario_params=5),
            "options.attestation: scenario_params: must be the path",
        ),
    ],
)
def test_options_config_mistakes_give_one_line(tmp_path, mutate, message):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, mutate))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_options_config_reads_exact_wad():
    o = load_config(OPTIONS_CONFIG).options
    assert o.risk.as_tuple() == (15 * 10**16, 13 * 10**16, 9 * 10**16, 75 * 10**16, 8 * 10**17, 5 * 10**15, 10**17)
    assert o.attestation.margin_floor == 25 * 10**16 and o.vol_feed.signers.threshold == 2
    assert [s.strikes for s in o.series][0] == (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)


class _Failing(Web3Backend):
    """Crashes after its `fail_at`-th transaction is mined, before the step is recorded."""

    def __init__(self, w3, fail_at: int):
        super().__init__(w3, ADMIN)
        self.fail_at, self.count = fail_at, 0

    def _tick(self):
        self.count += 1
        if self.count - 1 == self.fail_at:
            raise RuntimeError("crashed after sending")

    def deploy(self, name, *args):
        out = super().deploy(name, *args)
        self._tick()
        return out

    def transact(self, contract, fn, *args):
        super().transact(contract, fn, *args)
        self._tick()


@pytest.mark.anvil
def test_options_deploy_resumes_wires_verifies_and_posts_vols(tmp_path):
    config = load_config(OPTIONS_CONFIG)
    with Anvil() as url:
        w3 = connect(url)
        manifest = tmp_path / "dev.json"
        # 44 protocol transactions (config/local.yaml), then the vol feed, bounds, heartbeat, the option
        # liquidation code, market, risk params, attestor, 3 attestor params, then listings: crash after the 3rd
        # listing was mined
        with pytest.raises(RuntimeError):
            deploy_to_manifest(
                _Failing(w3, 44 + 10 + 2), config, manifest, admin=ADMIN, chain_id=w3.eth.chain_id, development=True
            )
        dep = deploy_to_manifest(
            Web3Backend(w3, ADMIN), config, manifest, admin=ADMIN, chain_id=w3.eth.chain_id, development=True
        )
        assert dep.steps["list_option ETH 30D C x0.8"].get("found_on_chain") is True  # series 2
        assert len(dep.option_series) == 28 and sorted(dep.option_series.values()) == list(range(28))
        assert dep.option_series["ETH-30D-C-2200"] == 8  # 1.1 x the 2000 USD mock index, a call
        assert load_manifest(manifest) == dep  # the manifest carries the option fields
        assert mismatches(verify_deployment(w3, dep, config)) == []  # wiring, params, signers, series
        # the attestor is governed to config/portfolio_margin.yaml; a config naming another grid differs
        grid = tmp_path / "pm.yaml"
        grid.write_text("portfolio_margin: {im_factor: 1.5}\n")
        other = dataclasses.replace(
            config,
            options=dataclasses.replace(
                config.options, attestation=dataclasses.replace(config.options.attestation, scenario_params=str(grid))
            ),
        )
        found = [c.parameter for c in mismatches(verify_deployment(w3, dep, other))]
        assert found == ["parameters = config", "scenario_params_hash"]
        engine = w3.eth.contract(address=dep.engine, abi=load_artifact_abi("MarginEngine"))
        assert engine.functions.option_market().call() == dep.option_market
        assert engine.functions.health_attestor().call() == dep.health_attestor

        feed = w3.eth.contract(address=dep.vol_feed, abi=load_artifact_abi("VolFeed"))
        expiry = dep.steps["list_option ETH 30D C x1"]["expiry"]
        now = w3.eth.get_block("latest")["timestamp"]
        keys = dev_keys(config.options.vol_feed.signers.signers)
        post_vols(w3, dep, keys, [vol_update(0, expiry, 0.85, -0.1, now)], ADMIN)
        assert tuple(feed.functions.vol_params(0, expiry).call())[:2] == (85 * 10**16, -(10**17))
        # one signer short of the threshold (2 of 2): the feed refuses it
        with pytest.raises(VolPostError, match="reverted"):
            post_vols(w3, dep, keys[:1], [vol_update(0, expiry, 0.9, 0.0, now + 1)], ADMIN)


def load_artifact_abi(name: str) -> list:
    from keeper.chain.artifacts import load_artifact

    return load_artifact(name).abi


@pytest.mark.anvil
def test_black_thursday_with_option_books(tmp_path):
    eth = load_price_csv(data_file("eth_usdt_1h_binance_2018-01_2021-08.csv"))
    btc = load_price_csv(data_file("btc_usdt_1h_binance_2018-01_2021-08.csv"))
    # 16 hourly steps through the steepest hours of 2020-03-12 (ETH 190 -> ~110)
    path = align({"ETH": eth, "BTC": btc}, parse_utc("2020-03-12T06:00:00Z"), parse_utc("2020-03-12T22:00:00Z"))
    for name in ("eth_usd_1d_coingecko.csv", "btc_usd_1d_coingecko.csv"):  # the realised-vol proxy's daily closes
        data_file(name)
    opts = ReplayOptions(
        path=path,
        accounts=30,
        seed=7,
        workdir=tmp_path,
        options=True,
        config=load_config(OPTIONS_CONFIG),
        vol_data_dir=DATA_DIR,
    )
    report = Replay(opts).run().data
    o = report["options"]

    assert set(OPTION_KINDS) <= set(report["accounts_by_kind"])  # every option kind is in the book
    assert report["missed_liquidations"] == 0
    assert report["liquidations"] > 0
    assert report["keeper"]["failed"] == 0
    # the vault's bad debt is what the insurance fund could not cover: none
    assert report["bad_debt_usd"] == 0
    assert report["vault_balances_reconcile"], report["reconciliation"]

    kinds = o["by_kind"]
    # a risk-defined book (short straddle + long 90/110 strangle) needs at most a third of its standard margin
    assert kinds["risk_defined"]["portfolio_im_usd"] <= kinds["risk_defined"]["standard_im_usd"] / 3
    for spread in ("call_spread", "put_spread"):
        assert kinds[spread]["portfolio_im_usd"] <= kinds[spread]["standard_im_usd"] / 3
    # hedging a short straddle's delta shows under portfolio margin, not under the additive standard rule
    assert kinds["delta_hedged_straddle"]["portfolio_im_usd"] < kinds["delta_hedged_straddle"]["standard_im_usd"]
    # cross margin nets the basis trades; standard is never above isolated
    start = o["requirement_at_start_usd"]
    assert start["standard"]["im"] <= start["isolated"]["im"]
    # the keeper's attestations lowered the on-chain requirement below the standard one, never below the floor
    end = o["requirement_at_end_usd"]
    assert end["on_chain"]["im"] < end["standard"]["im"]
    assert end["on_chain"]["im"] >= 0.25 * end["standard"]["im"] - 1
    # the counterfactual regimes were evaluated at every block, the start included
    assert len(o["steps"]) == report["blocks"] + 1


def _documented_population(tmp_path, start: str, end: str) -> ReplayOptions:
    """docs/replay.md's option replay population (100 accounts, seed 7) over [start, end)."""
    eth = load_price_csv(data_file("eth_usdt_1h_binance_2018-01_2021-08.csv"))
    btc = load_price_csv(data_file("btc_usdt_1h_binance_2018-01_2021-08.csv"))
    for name in ("eth_usd_1d_coingecko.csv", "btc_usd_1d_coingecko.csv"):
        data_file(name)
    return ReplayOptions(
        path=align({"ETH": eth, "BTC": btc}, parse_utc(start), parse_utc(end)),
        accounts=100,
        seed=7,
        workdir=tmp_path,
        options=True,
        config=load_config(OPTIONS_CONFIG),
        vol_data_dir=DATA_DIR,
    )


@pytest.mark.anvil
def test_documented_option_population_opens_within_the_minimum_position_notional(tmp_path):
    # seed 7 nets a market maker's ATM ETH put to $0.43 unless the fill goes elsewhere: the
    # set-up reverted "options: position below minimum notional"
    replay = Replay(_documented_population(tmp_path, "2021-05-18T00:00:00Z", "2021-05-18T02:00:00Z"))
    try:
        users = replay.setup()
        minimum = replay.client.engine.functions.min_position_notional().call()
        index = replay.client.oracle.functions.index_prices().call()
        price_of = {s.series_id: index[s.price_id] for s in replay.series}
        for account in [*(u.address for u in users), *(m.address for m in replay.market_makers)]:
            (positions,) = replay.client.option_positions([account])
            for series_id, size in positions.items():
                assert size == 0 or abs(size) * price_of[series_id] >= minimum * WAD, (account, series_id, size)
    finally:
        replay.close()


@pytest.mark.anvil
def test_an_option_trade_that_reverts_names_its_reason(tmp_path, monkeypatch):
    # the legs as the seed states them, each holder against one maker (the sizing this replaced)
    def unsized(specs, makers, index, min_notional, series_key=None):
        holders = [i for i, s in enumerate(specs) if s.options]
        fills = [
            OptionFill(i, j % makers, leg, trade_size(leg[3]))
            for j, i in enumerate(holders)
            for leg in sorted(specs[i].options, key=lambda leg: leg[3] < 0)
        ]
        return list(specs), fills

    monkeypatch.setattr(option_books, "plan_option_fills", unsized)
    replay = Replay(_documented_population(tmp_path, "2020-03-11T00:00:00Z", "2020-03-11T02:00:00Z"))
    with pytest.raises(
        ReplayError, match=r"^option trade reverted during setup: options: position below minimum notional \(tx 0x"
    ):
        replay.run()
