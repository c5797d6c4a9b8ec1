"""One version for the project: the contracts' `__version__` (lib/constants.vy), the Python
package (pyproject.toml, what `keeper --version` reports) and the newest CHANGELOG entry."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from click.testing import CliRunner

from keeper.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def test_contracts_package_and_changelog_share_one_version():
    vyper = re.search(
        r'^__version__: public\(constant\(String\[8\]\)\) = "([^"]+)"$',
        (ROOT / "contracts" / "lib" / "constants.vy").read_text(),
        re.M,
    )
    assert vyper, "contracts/lib/constants.vy declares no __version__"
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert vyper.group(1) == package == released[0], (vyper.group(1), package, released[:1])


def test_keeper_reports_its_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert (
        result.output.strip() == "keeper " + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    )
