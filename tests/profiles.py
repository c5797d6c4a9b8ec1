"""Hypothesis profiles of the state machines (tests/contracts/test_invariants.py,
test_options_invariants.py, test_coalition.py), registered when tests/conftest.py imports this
module (or a machine module does, outside pytest).

    ci    the default under CI=true: a fixed sequence (derandomized), so a merge is judged on
          known examples; the coalition machine reports what it finds without shrinking
    dev   the default elsewhere: the same sizes, random, so local runs explore
    deep  long runs that shrink what they find: bin/test --hypothesis-profile deep <file>

Choose one with pytest's `--hypothesis-profile NAME`. Each machine states its own size per
profile (`machine_settings`), so one switch sizes them all.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

NAMES = ("ci", "dev", "deep")
_COMMON = dict(
    deadline=None,
    database=None,  # several runs may share this tree: do not write .hypothesis/
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
_selected = ["ci" if os.environ.get("CI", "") not in ("", "0", "false") else "dev"]


def register() -> None:
    settings.register_profile("ci", derandomize=True, **_COMMON)
    settings.register_profile("dev", **_COMMON)
    settings.register_profile("deep", **_COMMON)


register()  # on import too: a machine module imported outside pytest still finds its profile


def select(name: str) -> None:
    """Make `name` the profile the machines size themselves by (tests/conftest.py, from
    --hypothesis-profile)."""
    _selected[0] = name


def current() -> str:
    return _selected[0]


def machine_settings(sizes: dict[str, tuple[int, int]], **overrides) -> settings:
    """The current profile with a machine's (examples, steps per example) for it."""
    examples, steps = sizes[current()]
    return settings(settings.get_profile(current()), max_examples=examples, stateful_step_count=steps, **overrides)
