"""Static checks of the contracts, run by the test suite (this is the CI check):

(a) tools/check_call_order.py finds no evaluation-order hazard in contracts/;
(b) the checker flags state-changing calls whose evaluation order Vyper does not guarantee, and
    leaves the safe patterns alone (synthetic sources written to tmp_path);
(c) one explicit compiler and EVM target everywhere: `# pragma version 0.4.3` in every contract,
    `evm_version: cancun` in brownie-config.yaml and EVM_VERSION = "cancun" for the keeper's
    artifacts.

Why cancun: it is the newest EVM version whose bytecode runs on Ethereum mainnet (at Prague since
the Pectra upgrade of May 2025, which runs cancun bytecode unchanged) and on the major L2s and
public testnets as of 2025. The tools' defaults are newer and would drift silently: Vyper 0.4.3
compiles for prague unless told otherwise, and Anvil 1.7 runs the latest hardfork by default.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "contracts"
CHECKER = ROOT / "tools" / "check_call_order.py"
TARGET_EVM = "cancun"
TARGET_VYPER = "0.4.3"


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_call_order", CHECKER)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_call_order", module)
    spec.loader.exec_module(module)
    return module


checker = _load_checker()


def run_checker(*paths: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECKER), *map(str, paths)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


# ---------------------------------------------------------------- (a) the real contracts


def test_contracts_have_no_evaluation_order_findings():
    findings = checker.check_paths([CONTRACTS])
    assert findings == [], "\n".join(map(str, findings))


def test_checker_cli_passes_on_contracts():
    out = run_checker()  # default: contracts/
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == ""


def test_checker_sees_every_contract():
    """The check is not vacuous: it parses every .vy file and resolves the state-changing calls."""
    files = checker._vy_files([CONTRACTS])
    assert {f.name for f in files} >= {"CollateralVault.vy", "MarginEngine.vy", "OracleRouter.vy", "roles.vy", "wad.vy"}
    an = checker._Analyzer([CONTRACTS])
    vault = an.load(CONTRACTS / "CollateralVault.vy")
    engine = an.load(CONTRACTS / "lib" / "engine_core.vy")
    matching = an.load(CONTRACTS / "Matching.vy")
    assert an.function_effect(vault, "_pull") == "extcall"
    assert an.function_effect(vault, "_check_engine") is None  # @view
    assert "writes self.nonce_bitmap" in an.function_effect(matching, "_use_nonce")
    # transitive: _liquidate_positions -> _close_underlying -> _accrue_funding writes storage
    assert "_accrue_funding" in an.function_effect(engine, "_liquidate_positions")
    wad = an.module_for(engine, "wad")
    assert wad is not None and an.function_effect(wad, "_mul_div_up") is None  # @pure, in lib/


# ---------------------------------------------------------------- (b) synthetic sources

LIB_COUNTER = """\
# pragma version 0.4.3
count: uint256


@internal
def _bump() -> uint256:
    self.count += 1
    return self.count


@internal
@view
def _peek() -> uint256:
    return self.count


@internal
@pure
def _double(x: uint256) -> uint256:
    return 2 * x
"""

HEADER = """\
# pragma version 0.4.3
import lib.counter as counter

initializes: counter


interface IToken:
    def pull(amount: uint256) -> uint256: nonpayable
    def balanceOf(owner: address) -> uint256: view


event Pulled:
    amount: uint256


total: uint256
queue: DynArray[uint256, 8]


@internal
def _bump() -> uint256:
    self.total += 1
    return self.total


@internal
def _outer() -> uint256:
    return self._bump()


@internal
@view
def _peek() -> uint256:
    return self.total


@internal
def _check(x: uint256):
    assert x > 0, "zero"


@internal
def _record(amount: uint256, extra: uint256):
    self.total += amount + extra


"""

# (name, external function, fragment of the message); the flagged line is marked "# HERE"
FLAGGED = [
    (
        "extcall in another call's arguments",
        """
@external
def f(token: address):
    self._record(extcall IToken(token).pull(1), 2)  # HERE
""",
        "call to self._record has a state-changing call in its arguments: extcall IToken(...).pull()",
    ),
    (
        "state-writing internal call in arguments",
        """
@external
def f():
    self._record(self._bump(), 2)  # HERE
""",
        "self._bump() [self._bump() -> writes self.total]",
    ),
    (
        "transitively state-writing internal call in a builtin's arguments",
        """
@external
def f() -> uint256:
    return max(self._outer(), 3)  # HERE
""",
        "call to max has a state-changing call in its arguments: self._outer() [self._outer() -> self._bump()",
    ),
    (
        "state-writing module function in arguments",
        """
@external
def f() -> uint256:
    return min(counter._bump(), 5)  # HERE
""",
        "counter._bump() [counter._bump() -> writes self.count]",
    ),
    (
        # Vyper 0.4.3 really evaluates these right to left: counter._bump() runs first
        "two state-writing calls in unsafe_add",
        """
@external
def f() -> uint256:
    return unsafe_add(self._bump(), counter._bump())  # HERE
""",
        "call to unsafe_add has a state-changing call in its arguments: self._bump()",
    ),
    (
        "two extcalls in a binary operation",
        """
@external
def f(a: address, b: address) -> uint256:
    return extcall IToken(a).pull(1) + extcall IToken(b).pull(2)  # HERE
""",
        "binary operation with 2 side-effecting operands",
    ),
    (
        "two state-writing calls in a tuple",
        """
@external
def f() -> (uint256, uint256):
    return self._bump(), self._bump()  # HERE
""",
        "tuple with 2 side-effecting operands",
    ),
    (
        "two state-writing calls in a list literal",
        """
@external
def f() -> DynArray[uint256, 2]:
    return [self._bump(), counter._bump()]  # HERE
""",
        "list literal with 2 side-effecting operands",
    ),
    (
        "two extcalls in a comparison",
        """
@external
def f(a: address) -> bool:
    return extcall IToken(a).pull(1) == extcall IToken(a).pull(1)  # HERE
""",
        "comparison with 2 side-effecting operands",
    ),
    (
        "state-writing call next to a read of the state it writes",
        """
@external
def f() -> uint256:
    return self.total + self._bump()  # HERE
""",
        "binary operation mixes a state-changing call self._bump()",
    ),
    (
        "extcall in a log's arguments",
        """
@external
def f(token: address):
    log Pulled(amount=extcall IToken(token).pull(1))  # HERE
""",
        "log Pulled has a state-changing call in its arguments",
    ),
    (
        "pop of a storage array in arguments",
        """
@external
def f():
    self._record(self.queue.pop(), 0)  # HERE
""",
        "self.queue.pop() [pops self.queue]",
    ),
    (
        "augmented assignment of storage from a state-writing call",
        """
@external
def f():
    self.total += self._bump()  # HERE
""",
        "augmented assignment to self.total with a state-changing right-hand side",
    ),
    (
        "raw_call (not static) in arguments",
        """
@external
def f(target: address) -> uint256:
    return len(raw_call(target, b"", max_outsize=32))  # HERE
""",
        "raw_call(...) [raw_call without is_static_call=True]",
    ),
]

SAFE = [
    (
        "staticcall in arguments",
        """
@external
def f(token: address):
    self._record(staticcall IToken(token).balanceOf(self), 2)
""",
    ),
    (
        "view internal and view module function in arguments",
        """
@external
def f():
    self._record(self._peek(), counter._peek())
""",
    ),
    (
        "pure module function in arguments",
        """
@external
def f():
    self._record(counter._double(self.total), 1)
""",
    ),
    (
        "extcall assigned to a variable first",
        """
@external
def f(token: address) -> uint256:
    amount: uint256 = extcall IToken(token).pull(1)
    self._record(amount, 2)
    return self.total + amount
""",
    ),
    (
        "two staticcalls in a binary operation",
        """
@external
def f(a: address, b: address) -> uint256:
    return staticcall IToken(a).balanceOf(self) + staticcall IToken(b).balanceOf(self)
""",
    ),
    (
        "static raw_call in arguments",
        """
@external
def f(target: address) -> uint256:
    return len(raw_call(target, b"", max_outsize=32, is_static_call=True))
""",
    ),
    (
        "undecorated internal that writes nothing, in arguments",
        """
@external
def f():
    self._record(1, 2)
    self._check(self._peek())
""",
    ),
    (
        "state-changing call as a statement of its own",
        """
@external
def f(token: address):
    extcall IToken(token).pull(1)
    self._bump()
    assert extcall IToken(token).pull(2) > 0, "nothing"
""",
    ),
]


FLAGGED_BODY = {name: body for name, body, _ in FLAGGED}
SAFE_BODY = dict(SAFE)


def write_contract(tmp_path: Path, body: str) -> tuple[Path, int | None]:
    (tmp_path / "lib").mkdir(exist_ok=True)
    (tmp_path / "lib" / "counter.vy").write_text(LIB_COUNTER)
    source = HEADER + body.lstrip("\n")
    path = tmp_path / "Sample.vy"
    path.write_text(source)
    marked = [i for i, line in enumerate(source.splitlines(), 1) if line.endswith("# HERE")]
    return path, (marked[0] if marked else None)


@pytest.mark.parametrize(("name", "body", "fragment"), FLAGGED, ids=[c[0] for c in FLAGGED])
def test_checker_flags(tmp_path, name, body, fragment):
    path, line = write_contract(tmp_path, body)
    findings = checker.check_paths([path])
    assert len(findings) == 1, "\n".join(map(str, findings))
    assert findings[0].line == line
    assert fragment in findings[0].message
    assert "\n" not in str(findings[0])
    assert str(findings[0]).startswith(f"{findings[0].path}:{line}: ")


@pytest.mark.parametrize(("name", "body"), SAFE, ids=[c[0] for c in SAFE])
def test_checker_leaves_safe_code_alone(tmp_path, name, body):
    path, _ = write_contract(tmp_path, body)
    assert checker.check_paths([path]) == []


def test_check_source_api(tmp_path):
    path, line = write_contract(tmp_path, FLAGGED_BODY["extcall in another call's arguments"])
    findings = checker.check_source(path.read_text(), path)
    assert [f.line for f in findings] == [line]


def test_checker_cli_exit_codes(tmp_path):
    flagged = tmp_path / "flagged"
    flagged.mkdir()
    two_extcalls = FLAGGED_BODY["two extcalls in a binary operation"].replace("def f(", "def g(")
    write_contract(flagged, FLAGGED_BODY["extcall in another call's arguments"] + "\n\n" + two_extcalls)
    out = run_checker(flagged)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    assert all(re.match(r".*Sample\.vy:\d+: ", line) for line in lines), lines
    assert "2 evaluation-order finding(s)" in out.stderr

    safe = tmp_path / "safe"
    safe.mkdir()
    write_contract(safe, "\n\n".join(b.replace("def f(", f"def f{i}(") for i, b in enumerate(SAFE_BODY.values())))
    out = run_checker(safe)
    assert (out.returncode, out.stdout) == (0, "")


def test_checker_cli_reports_unparsable_source(tmp_path):
    bad = tmp_path / "Broken.vy"
    bad.write_text("# pragma version 0.4.3\n@external\ndef f(:\n    pass\n")
    out = run_checker(bad)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Broken.vy" in out.stderr and "cannot parse" in out.stderr
    out = run_checker(tmp_path / "missing")
    assert out.returncode == 2 and "no such file" in out.stderr


# ---------------------------------------------------------------- (c) one compiler and EVM target


def test_every_contract_pins_vyper_043():
    files = sorted(CONTRACTS.rglob("*.vy"))
    assert files
    for path in files:
        text = path.read_text()
        versions = re.findall(r"^#\s*(?:pragma\s+version|@version)\s+(\S+)\s*$", text, flags=re.M)
        assert versions == [TARGET_VYPER], f"{path.relative_to(ROOT)}: version pragmas {versions}"
        assert re.search(r"^# pragma version 0\.4\.3$", text, flags=re.M), path
        # a per-file EVM pragma is allowed only if it names the same target
        for evm in re.findall(r"^#\s*pragma\s+evm-version\s+(\S+)", text, flags=re.M):
            assert evm == TARGET_EVM, f"{path.relative_to(ROOT)}: evm-version {evm}"


def test_installed_vyper_matches_pragma():
    import vyper

    assert vyper.__version__.startswith(TARGET_VYPER), vyper.__version__


def test_brownie_config_targets_cancun():
    config = yaml.safe_load((ROOT / "brownie-config.yaml").read_text())
    vyper = config["compiler"]["vyper"]
    assert vyper["version"] == TARGET_VYPER
    assert vyper["evm_version"] == TARGET_EVM
    # the local chain brownie starts (Anvil) runs the same hardfork
    assert config["networks"]["development"]["cmd_settings"]["evm_version"] == TARGET_EVM


def test_keeper_artifacts_target_cancun():
    from keeper.chain import artifacts

    assert artifacts.EVM_VERSION == TARGET_EVM


def test_contract_tests_compile_for_cancun():
    from vyper.evm.opcodes import DEFAULT_EVM_VERSION

    from tests.boa_protocol import deployer

    settings = deployer("OracleRouter").compiler_data.settings
    assert (settings.evm_version or DEFAULT_EVM_VERSION) == TARGET_EVM


def test_keeper_anvil_runs_cancun(monkeypatch):
    from keeper.chain import anvil

    captured: list[list[str]] = []

    class Started(Exception):
        pass

    def fake_popen(cmd, **kwargs):
        captured.append(list(cmd))
        raise Started

    monkeypatch.setattr(anvil, "anvil_binary", lambda: "anvil")
    monkeypatch.setattr(anvil.subprocess, "Popen", fake_popen)
    with pytest.raises(Started):
        anvil.Anvil(port=1).start()
    cmd = captured[0]
    assert "--hardfork" in cmd and cmd[cmd.index("--hardfork") + 1] == TARGET_EVM, cmd
