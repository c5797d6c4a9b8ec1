"""The commitment to the portfolio-margin parameters (HealthAttestor.scenario_params_hash): a
canonical encoding that is the same on every machine and for every way of writing the same
values, and that changes with any field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from eth_utils import keccak

from keeper.config import DEFAULT_PM_CONFIG, load_scenario_params
from keeper.risk.scenarios import (
    ScenarioParams,
    scenario_params_canonical,
    scenario_params_hash,
)

# written out by hand from the documented encoding: sorted keys, exact decimal strings, no spaces
DEFAULT_CANONICAL = (
    '{"basis_contingency":"0.01","correlation":"0.5","delta_one_contingency":"0.03","dte_floor_days":"1.0",'
    '"extreme_cover":"0.35","extreme_multiple":"2.0","im_factor":"1.25","long_term_power":"0.13",'
    '"naked_option_contingency":"0.02","short_term_power":"0.3","spot_range":"0.15","spot_steps":"7",'
    '"vol_range_down":"0.3","vol_range_up":"0.6","vol_reference_days":"30.0"}'
)
# pinned: a change here means every deployed attestor's hash no longer matches the keeper's
DEFAULT_HASH = "07f58779e9dd9e56ef90c1f6f8dd0b0458392734e65f8cbbfc984fb582df97ad"


def test_canonical_encoding_and_pinned_hash():
    assert scenario_params_canonical(ScenarioParams()) == DEFAULT_CANONICAL.encode()
    assert scenario_params_hash(ScenarioParams()) == keccak(text=DEFAULT_CANONICAL)
    assert scenario_params_hash(ScenarioParams()).hex() == DEFAULT_HASH
    assert scenario_params_hash(load_scenario_params(DEFAULT_PM_CONFIG)).hex() == DEFAULT_HASH


def test_same_values_written_differently_hash_alike(tmp_path: Path):
    """Integers for float fields, trailing zeros, key order and comments do not matter."""
    f = tmp_path / "pm.yaml"
    f.write_text(
        "# reordered\nportfolio_margin:\n  vol_reference_days: 30\n  im_factor: 1.250\n  spot_range: 0.150\n"
        "  dte_floor_days: 1.0\n"
    )
    assert scenario_params_hash(load_scenario_params(f)).hex() == DEFAULT_HASH


def test_changes_with_every_field():
    base = ScenarioParams()
    hashes = {scenario_params_hash(base)}
    for f in dataclasses.fields(ScenarioParams):
        lo, hi = f.metadata["bounds"]
        value = getattr(base, f.name)
        if f.type in (int, "int"):
            other = value + 2 if value + 2 <= hi else value - 2
        else:
            other = value + 1e-9 if value + 1e-9 <= hi else value - 1e-9  # the smallest change still counts
        hashes.add(scenario_params_hash(dataclasses.replace(base, **{f.name: other})))
    assert len(hashes) == 1 + len(dataclasses.fields(ScenarioParams))
