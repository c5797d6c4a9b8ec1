"""The split of the contract core: the engine and the option market run their liquidation code by
delegatecall in their own storage, and only the matching contract can hand them a trade."""

from __future__ import annotations

import json
import subprocess
import sys

import boa
import pytest

from keeper.chain.artifacts import CONTRACTS
from tests.boa_protocol import WAD, OptionsKit, deploy_unique, source_deployer

ETH_PERP = "ETH-PERP"


def _layout(source: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "vyper", "-f", "layout", source],
        capture_output=True,
        text=True,
        check=True,
        cwd=CONTRACTS,
    )
    layout = json.loads(out.stdout)
    return {"storage": layout["storage_layout"], "transient": layout.get("transient_storage_layout", {})}


@pytest.mark.parametrize(
    ("owner", "code"),
    [
        ("MarginEngine.vy", "EngineLiquidation.vy"),
        ("MarginEngine.vy", "EngineDeleveraging.vy"),
        ("OptionMarket.vy", "OptionLiquidation.vy"),
    ],
)
def test_liquidation_code_shares_its_owners_storage_layout(owner, code):
    """Delegatecall is safe only if both deployables see the same slots: both lay out their storage
    through one module, so the layouts are equal slot for slot (the owner's immutables live in code)."""
    assert _layout(owner) == _layout(code)
    assert _layout(owner)["storage"]  # not vacuous


@pytest.mark.parametrize("which", ["liquidation", "deleveraging"])
def test_engine_refuses_liquidation_code_for_another_vault(protocol, which):
    p = protocol
    codes = {"liquidation": p.engine.LIQUIDATION(), "deleveraging": p.engine.DELEVERAGING()}
    name = {"liquidation": "EngineLiquidation.vy", "deleveraging": "EngineDeleveraging.vy"}[which]
    codes[which] = deploy_unique(source_deployer(name), p.engine.address, p.oracle.address).address
    with boa.reverts("engine: liquidation mismatch"):
        source_deployer("MarginEngine.vy").deploy(
            p.admin, p.vault.address, p.oracle.address, codes["liquidation"], codes["deleveraging"]
        )


def test_liquidation_code_called_directly_touches_nothing(protocol):
    """EngineLiquidation and EngineDeleveraging hold no positions and no role: called directly they
    find nothing to do, and the vault would refuse them anyway."""
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 1_000)
    p.deposit_usd(b, 1_000_000)
    p.trade(a, b, ETH_PERP, 4 * WAD, 2000 * WAD)
    p.set_price("ETH", 1800)
    assert p.engine.is_liquidatable(a.address)
    code = source_deployer("EngineLiquidation.vy").at(p.engine.LIQUIDATION())
    with boa.env.prank(b.address), boa.reverts("engine: account not liquidatable"):
        code.liquidate(a.address)
    # nor does the deleveraging code: it holds no positions and no rounds
    adl_code = source_deployer("EngineDeleveraging.vy").at(p.engine.DELEVERAGING())
    with boa.env.prank(b.address), boa.reverts("engine: no position to deleverage"):
        adl_code.nominate(a.address, 0, [b.address])
    with boa.env.prank(b.address), boa.reverts("engine: no deleveraging round"):
        adl_code.deleverage(a.address, 0)
    assert p.engine.positions(a.address, 0).size == 4 * WAD


def test_only_matching_hands_the_engine_a_trade(protocol):
    p = protocol
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 10_000)
    with boa.env.prank(a.address), boa.reverts("engine: not matching"):
        p.engine.trade(a.address, b.address, 0, WAD, 2000 * WAD)


def test_matching_is_set_once(protocol):
    p = protocol
    with boa.env.prank(p.admin), boa.reverts("engine: matching already set"):
        p.engine.set_matching(p.admin)
    assert p.engine.matching() == p.matching.address


def test_only_matching_hands_the_option_market_a_trade(protocol):
    p = protocol
    kit = OptionsKit.deploy(p)
    a = p.new_user()
    with boa.env.prank(a.address), boa.reverts("options: not matching"):
        kit.market.trade(a.address, p.admin, 0, WAD, WAD)
    assert kit.market.MATCHING() == p.matching.address


def test_every_deployable_reports_the_protocol_version(protocol):
    p = protocol
    version = source_deployer("lib/constants.vy").deploy().__version__()
    assert version and all(c.__version__() == version for c in (p.engine, p.vault, p.matching))


def _sources() -> list:
    return sorted(p for p in CONTRACTS.rglob("*.vy") if "mocks" not in p.parts)


def test_each_struct_and_constant_is_declared_once():
    """One place per rule: a struct or constant name declared in two sources is a copy that can
    drift (WAD was declared in 7 files, MarginSummary in 4)."""
    import re

    seen: dict[str, list[str]] = {}
    for path in _sources():
        text = path.read_text()
        for name in re.findall(r"^struct (\w+):", text, flags=re.M) + re.findall(
            r"^(\w+): constant\(", text, flags=re.M
        ):
            seen.setdefault(name, []).append(str(path.relative_to(CONTRACTS)))
    assert {n: files for n, files in seen.items() if len(files) > 1} == {}


def test_every_source_has_a_license_and_every_deployable_says_what_it_trusts():
    from keeper.chain.artifacts import NAMES

    deployables = {CONTRACTS / source for source in NAMES.values() if not source.startswith("mocks/")}
    for path in _sources():
        text = path.read_text()
        assert "@license" in text, f"{path.name}: no @license in its NatSpec header"
        if path in deployables:
            assert "@custom:security" in text, f"{path.name}: no @custom:security (what it trusts, what it guarantees)"


def test_trade_rule_mirror_equals_the_contract():
    """The invariant machine predicts trades with a Python mirror of `lib/trade_rules.vy`; the
    mirror answers as the contract does over a grid of sizes and summaries around each boundary
    (meets IM, reduces or not, IM up, below maintenance, health and surplus up or down)."""
    import itertools

    from tests.contracts.test_invariants import Summary, trade_allowed

    rules = source_deployer("lib/trade_rules.vy").deploy()
    sizes = [(5, 3), (5, 5), (5, 7), (5, -1), (-5, -3), (-5, 2), (0, 1)]
    befores = [Summary(100, 80, 50, 2 * WAD), Summary(40, 80, 50, 8 * WAD // 10), Summary(-10, 80, 50, 0)]
    afters = [
        Summary(e, im, 50, hf)
        for e, im, hf in itertools.product((-20, 39, 40, 41, 90), (70, 80, 90), (0, 8 * WAD // 10, 2 * WAD))
    ]
    checked = 0
    for (old, new), before, after in itertools.product(sizes, befores, afters):
        want = rules.trade_allowed(old, new, tuple(before), tuple(after))
        assert trade_allowed(old, new, before, after) == want, (old, new, before, after)
        checked += want
    assert 0 < checked < len(sizes) * len(befores) * len(afters)  # both answers occur
