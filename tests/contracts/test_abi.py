"""The external surface of the deployable contracts, generic over `keeper.chain.abis.deployables()`
(the `artifacts.NAMES` entries outside mocks/), so that these checks follow the contracts as
they are split, merged or renamed. Plain pytest, no chain: everything is read from the compiler.

- the committed `abi/<C>.json` and `interfaces/<C>.vyi` are what `bin/abi` writes today, and
  each generated interface compiles and declares the contract's external functions;
- no external function name is overloaded (ethers 6 refuses ambiguous names; a Vyper default
  argument creates one ABI entry per arity);
- each deployed contract keeps 3 KiB of headroom below the EIP-170 code size limit;
- `ecrecover` is used in one source file only (one signature path to review);
- every inline `interface X:` of a contract or module agrees with the contract it calls
  (names, ABI input and output types, mutability); every interface name must be mapped.

Compilation is cached twice: on disk by source hash (build/keeper, build/abi) and in this
process (functools.cache), so each contract is compiled at most once per session.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path

import cbor2
import pytest
import vyper
from vyper import ast as vy_ast

from keeper.chain import abis
from keeper.chain.artifacts import CONTRACTS, EVM_VERSION, NAMES, ROOT, load_artifact
from keeper.chain.governance import GOVERNED

EIP170_LIMIT = 24_576  # bytes of deployed code (EIP-170)
HEADROOM = 3_072  # kept free for fixes and small features without a contract split
MAX_DEPLOYED_SIZE = EIP170_LIMIT - HEADROOM

DEPLOYABLES = abis.deployables()
REGENERATE = f"run {abis.COMMAND} and commit abi/ and interfaces/ with the contract change"


def _sources() -> list[Path]:
    """Every contract and module source under contracts/, mocks excluded."""
    return sorted(p for p in CONTRACTS.rglob("*.vy") if p.relative_to(CONTRACTS).parts[0] != "mocks")


def _rel(path: Path) -> str:
    return path.relative_to(CONTRACTS).as_posix()


@functools.cache
def _abi(name: str) -> tuple[dict, ...]:
    return tuple(abis.compiled_abi(name))


@functools.cache
def _vyi_abi(path: Path) -> tuple[dict, ...]:
    """The ABI of a Vyper interface file (.vyi), as `vyper -f abi` gives it."""
    from vyper.cli.vyper_compile import compile_files

    out = compile_files([str(path)], ("abi",), paths=[str(path.parent)])
    return tuple(next(iter(out.values()))["abi"])


def _abi_type(param: dict) -> str:
    """Canonical ABI type: a tuple (a struct) is written out as the tuple of its members."""
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + t[len("tuple") :]
    return t


def _signature(entry: dict) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """(name, input types, output types, mutability) of a function ABI entry."""
    return (
        entry["name"],
        tuple(_abi_type(i) for i in entry["inputs"]),
        tuple(_abi_type(o) for o in entry["outputs"]),
        entry["stateMutability"],
    )


def _functions(abi) -> list[tuple[str, tuple[str, ...], tuple[str, ...], str]]:
    return [_signature(e) for e in abi if e["type"] == "function"]


def _show(sig) -> str:
    name, ins, outs, mut = sig
    return f"{name}({','.join(ins)}) -> ({','.join(outs)}) {mut}"


# ---------------------------------------------------------------- committed files


def test_committed_abis_and_interfaces_are_current():
    problems = abis.check_all(ROOT)
    assert not problems, "\n".join(problems) + f"\n-> {REGENERATE}"


@pytest.mark.parametrize("name", DEPLOYABLES)
def test_generated_interface_compiles_to_the_contract_functions(name):
    """interfaces/<C>.vyi is a valid Vyper interface (other contracts can import it) declaring
    exactly the contract's external function names, each with a signature the contract has.
    (`vyper -f interface` writes a function with default arguments in its longest form only,
    and events without `indexed`: for topics and overloads, abi/<C>.json is the reference.)"""
    path = ROOT / abis.interface_path(name)
    if not path.exists():
        pytest.fail(f"{abis.interface_path(name)} missing: {REGENERATE}")
    declared = set(_functions(_vyi_abi(path)))
    compiled = set(_functions(_abi(name)))
    assert declared <= compiled, (
        f"{name}: not in the compiled ABI: {sorted(map(_show, declared - compiled))}: {REGENERATE}"
    )
    assert {s[0] for s in declared} == {s[0] for s in compiled}, f"{name}: {REGENERATE}"


# ---------------------------------------------------------------- no overloads


@pytest.mark.parametrize("name", DEPLOYABLES)
def test_no_overloaded_external_names(name):
    """Each external function name appears once in the ABI. ethers 6 refuses an ambiguous
    `contract.deposit(...)` (the caller must spell out the full signature), and viem/web3.py
    pick by argument count; Vyper creates one ABI entry per arity for default arguments."""
    counts = Counter(s[0] for s in _functions(_abi(name)))
    overloaded = {n: [_show(s) for s in _functions(_abi(name)) if s[0] == n] for n, k in counts.items() if k > 1}
    assert not overloaded, (
        f"{name} overloads {', '.join(overloaded)} (ethers 6 rejects ambiguous names; default arguments "
        "create one ABI entry per arity): give each variant its own name. Entries: "
        + "; ".join(s for sigs in overloaded.values() for s in sigs)
    )


# ---------------------------------------------------------------- code size


@functools.cache
def deployed_size(name: str) -> tuple[int, int]:
    """(runtime bytes, immutable bytes) of contract `name`; the deployed code is their sum.

    Read from the compiler's own record: Vyper 0.4 ends the creation code with a CBOR footer
    `[integrity hash, runtime size, [data section sizes], immutables size, {"vyper": [0, 4, 3]}]`
    followed by its 2-byte length (the layout source verifiers parse; 0.4.0 has no integrity
    hash, hence the fields are read from the end). The runtime size is the code the constructor
    returns before the immutables it appends; the immutables size is 32 bytes per word of
    immutable data. No deployment and no recompilation: it is the cached creation code the
    keeper deploys. When this test was written the sum equalled `eth_getCode` on Anvil for every
    deployable (options and timelock deployed through keeper.chain.deploy).
    """
    code = bytes.fromhex(load_artifact(name).bytecode.removeprefix("0x"))
    footer_len = int.from_bytes(code[-2:], "big")
    meta = cbor2.loads(code[-footer_len:-2])
    assert isinstance(meta, list) and len(meta) >= 4 and isinstance(meta[-1], dict) and "vyper" in meta[-1], (
        f"{name}: unexpected Vyper metadata footer {meta!r}: the size check needs updating for this compiler"
    )
    runtime, immutables = meta[-4], meta[-2]
    assert isinstance(runtime, int) and isinstance(immutables, int) and immutables % 32 == 0, meta
    assert runtime + footer_len < len(code), f"{name}: the footer's runtime size {runtime} exceeds the creation code"
    return runtime, immutables


def test_deployed_code_keeps_headroom_below_eip170():
    rows = []
    for name in DEPLOYABLES:
        runtime, immutables = deployed_size(name)
        rows.append((name, runtime, immutables, runtime + immutables))
    too_big = [r for r in rows if r[3] > MAX_DEPLOYED_SIZE]
    table = "\n".join(
        f"  {n:<18}{rt:>9,}{im:>12,}{total:>10,}{MAX_DEPLOYED_SIZE - total:>+11,}{'  <- too big' if total > MAX_DEPLOYED_SIZE else ''}"
        for n, rt, im, total in sorted(rows, key=lambda r: -r[3])
    )
    assert not too_big, (
        f"deployed code above {MAX_DEPLOYED_SIZE:,} bytes (EIP-170 limit {EIP170_LIMIT:,} minus {HEADROOM:,} headroom):\n"
        f"  {'contract':<18}{'runtime':>9}{'immutables':>12}{'deployed':>10}{'headroom':>11}\n{table}"
    )


# ---------------------------------------------------------------- one signature path


@functools.cache
def _parsed(path: Path) -> vy_ast.Module:
    return vy_ast.parse_to_ast(path.read_text(encoding="utf-8"), module_path=_rel(path), resolved_path=str(path))


def test_ecrecover_in_one_source_file():
    """Signature recovery (and its malleability and zero-address rules) lives in one place.
    Read from the syntax tree, so comments and docstrings that mention it do not count."""
    uses = {}
    for path in _sources():
        lines = sorted({n.lineno for n in _parsed(path).get_descendants(vy_ast.Name, {"id": "ecrecover"})})
        if lines:
            uses[_rel(path)] = lines
    assert len(uses) == 1, (
        f"ecrecover is used in {len(uses)} files under contracts/ (one expected: a single signature module): "
        + "; ".join(f"{f} line {', '.join(map(str, ls))}" for f, ls in sorted(uses.items()))
    )


# ---------------------------------------------------------------- inline interfaces

# interface name -> what it is checked against: deployable contracts (each must answer every
# declared function), mocks standing in for an outside standard, or the standard itself as a
# Vyper interface file ("interfaces/X.vyi" in this repository, "vyper:<path>" in the compiler's
# built-ins). A key "File.vy:Name" (path under contracts/) overrides "Name" for that file.
CALLEES: dict[str, tuple[str, ...]] = {
    "IOracle": ("OracleRouter",),
    "IVault": ("CollateralVault",),
    "IEngine": ("MarginEngine",),
    "IMarginEngine": ("MarginEngine",),
    "IOptions": ("OptionMarket",),
    "IOptionMarket": ("OptionMarket",),
    "IAttestor": ("HealthAttestor",),
    "IVolFeed": ("VolFeed",),
    "IMatching": ("Matching",),
    # the deployables whose code the engine and the option market run by delegatecall
    "MarginEngine.vy:ILiquidation": ("EngineLiquidation", "EngineDeleveraging"),
    "OptionMarket.vy:ILiquidation": ("OptionLiquidation",),
    # Timelock.accept_admin_of: every contract whose roles the timelock takes over
    "IRoles": tuple(name for _, name in GOVERNED),
    # outside standards: Chainlink's feed as recorded in interfaces/, and ERC-20's optional decimals()
    "AggregatorV3": ("interfaces/AggregatorV3.vyi", "MockAggregator"),
    "IERC20Decimals": ("vyper:builtins/interfaces/IERC20Detailed.vyi", "MockERC20"),
}

# (file under contracts/, interface, function) -> why its declared outputs may be a leading part
# of the callee's. Only for static outputs (each a fixed 32-byte word), which decode the same.
OUTPUT_PREFIX_ALLOWED: dict[tuple[str, str, str], str] = {
    (
        "lib/engine_core.vy",
        "IAttestor",
        "effective_margin",
    ): "reads (im, mm) of HealthAttestor's (im, mm, attested): the flag is not needed (see its @dev)",
}


def _interfaces() -> list[tuple[str, str]]:
    """(file under contracts/, interface name) of every inline interface, from the syntax tree."""
    return [(_rel(p), node.name) for p in _sources() for node in _parsed(p).get_children(vy_ast.InterfaceDef)]


INTERFACES = _interfaces()


@functools.cache
def _declared(rel: str) -> dict[str, list[dict]]:
    """Interface name -> ABI entries of its functions, from the annotated (type-checked) module,
    compiled with the same search path and EVM version as the artifacts."""
    from vyper.cli.vyper_compile import get_search_paths
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.compiler.phases import CompilerData
    from vyper.compiler.settings import Settings

    bundle = FilesystemInputBundle(get_search_paths([str(CONTRACTS)]))
    module = CompilerData(
        bundle.load_file(CONTRACTS / rel), bundle, Settings(evm_version=EVM_VERSION)
    ).annotated_vyper_module
    out = {}
    for node in module.get_children(vy_ast.InterfaceDef):
        interface_t = node._metadata["interface_type"]
        out[node.name] = [e for fn in interface_t.functions.values() for e in fn.to_toplevel_abi_dict()]
    return out


def _callee_abi(callee: str) -> tuple[dict, ...]:
    if callee.startswith("vyper:"):
        return _vyi_abi(Path(vyper.__file__).parent / callee.removeprefix("vyper:"))
    if callee.endswith(".vyi"):
        return _vyi_abi(ROOT / callee)
    return _abi(callee)


def _static(abi_type: str) -> bool:
    return "[]" not in abi_type and not re.search(r"\b(bytes|string)\b", abi_type)


def _mismatch(declared: dict, callee_abi, prefix_allowed: bool) -> str | None:
    name, ins, outs, mut = _signature(declared)
    same_name = [s for s in _functions(callee_abi) if s[0] == name]
    if not same_name:
        return f"{name} is not an external function of it"
    same_inputs = [s for s in same_name if s[1] == ins]
    if not same_inputs:
        return f"{_show(_signature(declared))} takes other inputs there: {'; '.join(map(_show, same_name))}"
    callee = same_inputs[0]
    if outs != callee[2]:
        prefix = len(outs) < len(callee[2]) and callee[2][: len(outs)] == outs and all(map(_static, callee[2]))
        if not (prefix and prefix_allowed):
            return f"{name} returns ({','.join(outs)}) here, ({','.join(callee[2])}) there"
    if mut in ("view", "pure") and callee[3] not in ("view", "pure"):
        return f"{name} is declared {mut} but is {callee[3]} there (a staticcall would revert on its writes)"
    if mut == "payable" and callee[3] != "payable":
        return f"{name} is declared payable but is {callee[3]} there"
    return None


def test_inline_interfaces_are_found():
    assert INTERFACES, "no `interface X:` block found under contracts/: the parser no longer sees them"
    for callees in CALLEES.values():
        for callee in callees:
            assert callee in NAMES or callee.endswith(".vyi"), f"CALLEES names {callee!r}: not in artifacts.NAMES"


@pytest.mark.parametrize(("rel", "interface"), INTERFACES, ids=[f"{r}::{i}" for r, i in INTERFACES])
def test_inline_interface_matches_its_callee(rel, interface):
    callees = CALLEES.get(f"{rel}:{interface}", CALLEES.get(interface))
    if callees is None:
        pytest.fail(
            f"contracts/{rel} declares `interface {interface}`, which CALLEES in {Path(__file__).relative_to(ROOT)} "
            "does not map: add it there with the contract(s) it calls (or the standard it follows)"
        )
    problems = []
    for entry in _declared(rel)[interface]:
        for callee in callees:
            why = _mismatch(entry, _callee_abi(callee), (rel, interface, entry["name"]) in OUTPUT_PREFIX_ALLOWED)
            if why:
                problems.append(f"{interface}.{entry['name']} vs {callee}: {why}")
    assert not problems, f"contracts/{rel}:\n  " + "\n  ".join(problems)


def test_allowed_output_prefixes_are_still_needed():
    """Each OUTPUT_PREFIX_ALLOWED entry still names a declaration that reads fewer outputs."""
    for (rel, interface, fn), _why in OUTPUT_PREFIX_ALLOWED.items():
        entries = (
            [e for e in _declared(rel).get(interface, []) if e["name"] == fn] if (CONTRACTS / rel).exists() else []
        )
        assert entries, f"OUTPUT_PREFIX_ALLOWED names {rel} {interface}.{fn}, which no longer exists: remove the entry"
        callees = CALLEES.get(f"{rel}:{interface}", CALLEES.get(interface, ()))
        assert any(_mismatch(e, _callee_abi(c), False) for e in entries for c in callees), (
            f"{rel} {interface}.{fn} now declares every output: remove its OUTPUT_PREFIX_ALLOWED entry"
        )


def _fn(name, ins, outs, mut="view"):
    return {
        "type": "function",
        "name": name,
        "stateMutability": mut,
        "inputs": [{"name": "", "type": t} for t in ins],
        "outputs": outs,
    }


_U, _B, _ARR = {"type": "uint256"}, {"type": "bool"}, {"type": "uint256[]"}
_STRUCT = {"type": "tuple", "components": [{"name": "a", "type": "uint256"}, {"name": "b", "type": "uint256[]"}]}


@pytest.mark.parametrize(
    ("declared", "callee", "prefix_allowed", "expected"),
    [
        (_fn("f", ["address"], [_STRUCT]), _fn("f", ["address"], [_STRUCT]), False, None),
        (
            _fn("f", ["address"], [_STRUCT]),
            _fn("f", ["address"], [_U, _ARR]),
            False,
            "returns ((uint256,uint256[])) here",
        ),
        (_fn("f", ["address"], [_U]), _fn("f", ["uint256"], [_U]), False, "takes other inputs there"),
        (_fn("f", [], [_U]), _fn("g", [], [_U]), False, "not an external function"),
        (_fn("f", [], [_U]), _fn("f", [], [_U], "nonpayable"), False, "declared view but is nonpayable"),
        (_fn("f", [], [], "nonpayable"), _fn("f", [], [], "view"), False, None),
        (_fn("f", [], [], "payable"), _fn("f", [], [], "nonpayable"), False, "declared payable"),
        (_fn("f", [], [_U, _U]), _fn("f", [], [_U, _U, _B]), False, "returns (uint256,uint256) here"),
        (_fn("f", [], [_U, _U]), _fn("f", [], [_U, _U, _B]), True, None),
        (_fn("f", [], [_U]), _fn("f", [], [_U, _ARR]), True, "returns (uint256) here"),  # dynamic tail
    ],
    ids=[
        "struct",
        "struct-vs-values",
        "inputs",
        "missing",
        "view-vs-write",
        "nonpayable-any",
        "payable",
        "prefix",
        "prefix-allowed",
        "prefix-dynamic",
    ],
)
def test_interface_comparison_rules(declared, callee, prefix_allowed, expected):
    """The comparison itself, on synthetic ABI entries (so a broken rule cannot pass silently)."""
    why = _mismatch(declared, [callee], prefix_allowed)
    assert (why is None) if expected is None else (why is not None and expected in why), why
