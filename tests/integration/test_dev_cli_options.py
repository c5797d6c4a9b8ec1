"""`keeper dev accounts` on an options deployment (config/options.yaml, roles handed to a
timelock as `keeper deploy` does on a development chain): option books on every other account,
traded against the market maker after fresh vols, each position at least the minimum position
notional; `keeper account` shows them. Without a live series it lists some when the option
market's admin is a development account, and refuses (one line) when it is a timelock."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.client import ProtocolClient, connect
from keeper.chain.deploy import Web3Backend, deploy_to_manifest
from keeper.config import load_config, with_default_governance
from keeper.dev_cli import dev, dev_account

pytestmark = pytest.mark.anvil

WAD = 10**18
ADMIN = DEV_ACCOUNTS[0][0]
TRADERS = [dev_account(i)[0] for i in range(3, 9)]  # --count 6
MAKER = dev_account(2)[0]
OPTIONS_CONFIG = Path(__file__).resolve().parents[2] / "config" / "options.yaml"


def _deploy(w3, config, manifest):
    return deploy_to_manifest(
        Web3Backend(w3, ADMIN), config, manifest, admin=ADMIN, chain_id=w3.eth.chain_id, development=True
    )


class Chain:
    def __init__(self, url: str, manifest: Path):
        self.url = url
        self.manifest = manifest
        self.w3 = connect(url)
        self.dep = _deploy(self.w3, with_default_governance(load_config(OPTIONS_CONFIG), ADMIN, True), manifest)
        self.client = ProtocolClient(self.w3, self.dep)

    def rpc(self, method: str, args: list):
        response = self.w3.provider.make_request(method, args)
        assert "error" not in response, response
        return response["result"]


def keeper_dev(chain, *args: str, manifest=None) -> tuple[int, str]:
    result = CliRunner().invoke(
        dev, [*args, "--rpc", chain.url, "--manifest", str(manifest or chain.manifest)], catch_exceptions=False
    )
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    with Anvil() as url:
        yield Chain(url, tmp_path_factory.mktemp("dev-options") / "development.json")


@pytest.fixture
def env(chain):
    snapshot = chain.rpc("evm_snapshot", [])
    yield chain
    chain.rpc("evm_revert", [snapshot])


def _positions_meet_the_minimum(client, accounts: list[str]) -> dict[str, dict[int, int]]:
    """Every perpetual/future and option position of `accounts` is at least the engine's
    minimum position notional at the index; returns the option positions by account."""
    block = client.w3.eth.block_number
    minimum = client.engine.functions.min_position_notional().call()
    prices = client.oracle.functions.index_prices().call()
    price_of = {s.series_id: prices[s.price_id] for s in client.option_series()}
    snap = client.snapshot(accounts, block)
    price_id = client.risk_params(block).price_id
    for m in range(snap.book.size.shape[1]):
        index = int(snap.prices[int(price_id[int(snap.markets.underlying[m])])])
        for row, account in enumerate(accounts):
            size = int(snap.book.size[row, m])
            assert size == 0 or abs(size) * index >= minimum * WAD, (account, m, size)
    held = dict(zip(accounts, client.option_positions(accounts)))
    for account, positions in held.items():
        for series_id, size in positions.items():
            assert abs(size) * price_of[series_id] >= minimum * WAD, (account, series_id, size)
    return held


def test_accounts_open_option_books_against_the_market_maker(env):
    from keeper.cli import cli

    code, out = keeper_dev(env, "accounts", "--count", "6")
    assert code == 0, out
    for kind in ("long", "call_spread", "short", "put_spread", "future", "covered_call"):
        assert kind in out
    assert "options MM" in out
    assert "option legs traded at the marks after posting 2 vol point(s) (ATM 80%" in " ".join(out.split())
    held = _positions_meet_the_minimum(env.client, [*TRADERS, MAKER])
    holders = [a for a in TRADERS if held[a]]
    assert holders == TRADERS[1::2]  # every other account holds an option book
    # calls and puts, long and short among the books; the maker holds the other side of each
    sizes = [(s.is_call, size > 0) for a in holders for sid, size in held[a].items() for s in [_series(env, sid)]]
    assert {(True, True), (True, False), (False, True), (False, False)} <= set(sizes)
    for sid in {sid for a in holders for sid in held[a]}:
        assert sum(held[a].get(sid, 0) for a in holders) == -held[MAKER][sid]
    # each book meets initial margin with its options in the engine's margin summary
    for address, (equity, im, mm, _h) in zip(TRADERS, env.client.margin_summaries(TRADERS)):
        assert equity >= im > mm > 0, address
        assert address in out
    for holder in holders:
        (states,) = env.client.option_states([holder])
        assert env.client.margin_summaries([holder])[0].maintenance_margin >= sum(s.maintenance_margin for s in states)
    # the vols are fresh for every expiry traded
    feed = env.client.vol_feed.functions
    for s in {(s.price_id, s.expiry) for s in env.client.option_series()}:
        assert feed.is_fresh(*s).call()

    holder = holders[0]
    result = CliRunner().invoke(cli, ["account", holder, "--rpc", env.url, "--manifest", str(env.manifest)])
    assert result.exit_code == 0, result.output
    (call_id,) = [sid for sid, size in held[holder].items() if size > 0]
    s = _series(env, call_id)
    assert f"-{s.strike // WAD}-C" in result.output  # e.g. ETH-20250131-2000-C, its size and mark


def _series(env, series_id):
    return {s.series_id: s for s in env.client.option_series()}[series_id]


def test_no_options_opens_the_perpetual_book(env):
    code, out = keeper_dev(env, "accounts", "--count", "2", "--no-options")
    assert code == 0, out
    assert "options MM" not in out and "option legs" not in out
    assert env.client.option_positions(TRADERS[:2]) == [{}, {}]


def test_without_a_live_series_a_timelock_admin_is_refused(env):
    code, out = keeper_dev(env, "warp", str(31 * 86400))  # past the 30-day expiries, feeds fresh
    assert code == 0, out
    block = env.w3.eth.block_number
    code, out = keeper_dev(env, "accounts", "--count", "2")
    assert code == 1, out
    assert "the option market lists no series expiring in more than a day and its admin" in out
    assert env.dep.timelock in out and len(out.strip().splitlines()) == 1, out
    assert env.w3.eth.block_number == block  # nothing was sent


def test_without_a_series_a_development_admin_lists_some(env, tmp_path):
    config = load_config(OPTIONS_CONFIG)  # no governance: the deployer (account 0) stays admin
    config = dataclasses.replace(config, options=dataclasses.replace(config.options, series=()))
    manifest = tmp_path / "unlisted.json"
    dep = _deploy(env.w3, config, manifest)
    client = ProtocolClient(env.w3, dep)
    assert client.option_series() == []
    code, out = keeper_dev(env, "accounts", "--count", "4", manifest=manifest)
    assert code == 0, out
    assert "listed 12 option series (30 days, strikes 0.9, 1, 1.1 x the index): none was live" in " ".join(out.split())
    listed = client.option_series()
    assert len(listed) == 12 and {s.strike // WAD for s in listed} == {1800, 2000, 2200, 27000, 30000, 33000}
    held = _positions_meet_the_minimum(client, [*TRADERS[:4], MAKER])
    assert [bool(held[a]) for a in TRADERS[:4]] == [False, True, False, True]
