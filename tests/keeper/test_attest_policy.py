"""The attestation service's pure rules: rounding of the portfolio margin to WAD (up to the
cent), never attesting above the standard margin or when nothing is gained, and when an
attestation must be refreshed. Expected values are worked by hand."""

from __future__ import annotations

import math

import pytest

from keeper.attest import RefreshRules, attestation_key, attested_margins, refresh_reason, usd_to_wad_up
from keeper.chain.client import AttestorTerms, StoredAttestation

WAD = 10**18
CENT = 10**16
TERMS = AttestorTerms(margin_floor=WAD // 2, price_band=WAD // 100, max_validity=900, threshold=2, signer_set_version=1)
RULES = RefreshRules(refresh_before_seconds=120, price_move_fraction=0.5)
PRICES = (2000 * WAD, 30000 * WAD)


@pytest.mark.parametrize(
    "usd, cents",
    [
        (0.0, 0),
        (1234.56, 123456),
        (1234.561, 123457),
        (0.001, 1),
        (0.01, 1),
        (99.999, 10000),
        (1e6, 10**8),
        (184.46, 18446),
    ],
)
def test_rounds_up_to_the_cent_then_to_wad(usd, cents):
    assert usd_to_wad_up(usd) == cents * CENT


@pytest.mark.parametrize("bad", [-0.01, math.nan, math.inf])
def test_rejects_negative_or_non_finite_margin(bad):
    with pytest.raises(ValueError, match="finite amount"):
        usd_to_wad_up(bad)


def test_attests_the_rounded_portfolio_margin_when_lower():
    assert attested_margins(1500.004, 1200.001, 6000 * WAD, 4000 * WAD) == (150001 * CENT, 120001 * CENT)


def test_never_above_the_standard_margin():
    # portfolio IM above the standard one: the standard IM is attested, the lower MM still helps
    assert attested_margins(500.0, 100.0, 400 * WAD, 300 * WAD) == (400 * WAD, 100 * WAD)


@pytest.mark.parametrize("pm_im, pm_mm", [(400.0, 300.0), (500.0, 350.0), (399.999, 300.0)])
def test_skips_when_the_portfolio_margin_lowers_nothing(pm_im, pm_mm):
    # 399.999 rounds up to 400.00: not lower once rounded
    assert attested_margins(pm_im, pm_mm, 400 * WAD, 300 * WAD) is None


def test_im_is_never_below_mm():
    # IM capped at the standard 80 while MM would be 90: MM is lowered to IM (the attestor requires IM >= MM)
    assert attested_margins(100.0, 90.0, 80 * WAD, 95 * WAD) == (80 * WAD, 80 * WAD)


def stored(**kw) -> StoredAttestation:
    base = dict(position_version=7, prices=PRICES, initial_margin=1000 * WAD, maintenance_margin=800 * WAD,
                issued_at=1_000, valid_until=1_600, signer_set_version=1)  # fmt: skip
    return StoredAttestation(**{**base, **kw})


def test_nothing_stored_needs_one():
    assert refresh_reason(None, 1_000, 7, PRICES, TERMS, RULES) == "none"


def test_fresh_attestation_is_kept():
    assert refresh_reason(stored(), 1_400, 7, PRICES, TERMS, RULES) is None
    assert refresh_reason(stored(), 1_480, 7, PRICES, TERMS, RULES) is None  # exactly 120 s left


@pytest.mark.parametrize("now", [1_481, 1_600, 5_000])
def test_refreshes_before_expiry(now):
    assert refresh_reason(stored(), now, 7, PRICES, TERMS, RULES) == "expiring"


def test_refreshes_on_a_new_position_version_or_signer_set():
    assert refresh_reason(stored(), 1_100, 8, PRICES, TERMS, RULES) == "position_changed"
    assert refresh_reason(stored(signer_set_version=0), 1_100, 7, PRICES, TERMS, RULES) == "signers_changed"


def test_refreshes_when_a_price_moved_more_than_half_the_band():
    # band 1%: half of it is 10 USD on 2,000
    assert refresh_reason(stored(), 1_100, 7, (2010 * WAD, 30000 * WAD), TERMS, RULES) is None
    assert refresh_reason(stored(), 1_100, 7, (1990 * WAD, 30000 * WAD), TERMS, RULES) is None
    assert refresh_reason(stored(), 1_100, 7, (2010 * WAD + 1, 30000 * WAD), TERMS, RULES) == "prices"
    assert refresh_reason(stored(), 1_100, 7, (2000 * WAD, 29849 * WAD), TERMS, RULES) == "prices"
    assert refresh_reason(stored(), 1_100, 7, (2000 * WAD,), TERMS, RULES) == "prices"


def test_price_move_fraction_is_configurable():
    rules = RefreshRules(refresh_before_seconds=0, price_move_fraction=0.9)
    assert refresh_reason(stored(), 1_100, 7, (2017 * WAD, 30000 * WAD), TERMS, rules) is None
    assert refresh_reason(stored(), 1_100, 7, (2019 * WAD, 30000 * WAD), TERMS, rules) == "prices"


def test_transaction_key_names_the_account():
    assert attestation_key("0xAbC") == "attest:0xAbC"


# ---------------------------------------------------------------- governed scenario parameters


class _Call:
    def __init__(self, fn):
        self.fn = fn

    def call(self, block_identifier="latest"):
        return self.fn()


class FakeAttestor:
    """The two HealthAttestor reads the governed-parameters check makes, counted."""

    def __init__(self, governed: bytes):
        self.governed, self.stored, self.reads = governed, {}, 0
        self.functions = self

    def scenario_params_hash(self):
        return _Call(lambda: self.governed)

    def attestation_scenario_params(self, account):
        self.reads += 1
        return _Call(lambda: self.stored.get(account, b"\0" * 32))


def governed_service(governed_by_file: bool):
    from types import SimpleNamespace

    from keeper.attest import AttestationService
    from keeper.risk.scenarios import ScenarioParams, scenario_params_hash

    ours = scenario_params_hash(ScenarioParams())
    attestor = FakeAttestor(ours if governed_by_file else scenario_params_hash(ScenarioParams(im_factor=1.5)))
    service = AttestationService(
        SimpleNamespace(attestor=attestor), tx=None, signer_keys=["0x01"], scenario_source="pm.yaml"
    )
    return service, attestor, ours


def test_refuses_to_start_with_an_ungoverned_file():
    from keeper.attest import ScenarioParamsNotGoverned

    service, attestor, ours = governed_service(False)
    with pytest.raises(ScenarioParamsNotGoverned) as e:
        service.check_governed()
    assert str(e.value) == (
        f"the scenario parameters in pm.yaml hash to 0x{ours.hex()} but the attestor is governed to "
        f"0x{attestor.governed.hex()}; use the governed file"
    )
    governed_service(True)[0].check_governed()  # no error


def test_skips_blocks_while_governance_disagrees(caplog):
    service, attestor, ours = governed_service(True)
    service.check_governed()
    other = attestor.governed = b"\x01" * 32
    with caplog.at_level("WARNING", logger="keeper.attest"):
        assert service.step(10, 1_000, ["0xA"]) == [] and service.step(11, 1_001, ["0xA"]) == []
    assert service.metrics.value("keeper_attestations_skipped_total", reason="scenario_params") == 2
    assert [r.getMessage().count(other.hex()) for r in caplog.records] == [1]  # logged once per change


def test_stored_attestation_under_another_hash_needs_refresh():
    service, attestor, ours = governed_service(True)
    service.check_governed()
    attestor.stored = {"0xA": ours, "0xB": b"\x02" * 32}
    assert service._params_current("0xA", 1) and not service._params_current("0xB", 1)
    assert service._params_current("0xA", 2) and attestor.reads == 2  # 0xA read once, then known
    attestor.governed = b"\x03" * 32
    assert not service._governed_now(3)  # a new governed hash forgets what was known
    assert not service._params_current("0xA", 3) and attestor.reads == 3
