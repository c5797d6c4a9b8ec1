#!/usr/bin/env python3
"""Static check for Vyper's evaluation-order hazard: state-changing calls evaluated together
with other subexpressions.

Vyper specifies left-to-right evaluation, but the compiler does not always honour it: builtin and
operator arguments can be evaluated in another order (GHSA-g2xh-c426-v8mf, still open upstream as
vyperlang/vyper#3604), complex arguments are cached and so evaluated before simple ones
(vyperlang/vyper#4019), and the order of keyword arguments and of `log` arguments is tracked as
undefined (vyperlang/vyper#4712, #4464). Fixed instances include GHSA-4hg4-9mf5-wxxq (ecadd, ecmul,
addmod, mulmod). It is not theoretical with the pinned compiler: under Vyper 0.4.3,
`unsafe_add(self._a(), self._b())` runs `_b` before `_a`. So wherever a call that changes state
sits next to other subexpressions, the result may depend on the compiler, not on the source. The
safe pattern is to make the call a statement of its own and keep its result in a local variable:

    amount: uint256 = extcall token.pull(x)      # not: self._credit(extcall token.pull(x))
    self._credit(amount)

What counts as state-changing ("side-effecting"):
- `extcall ...` (a `staticcall` does not);
- a call of an internal function, `self._f(...)` or `module._f(...)`, that is neither `@view` nor
  `@pure` and (transitively) writes storage, makes an extcall, emits a log or calls a
  state-changing builtin; decorators are resolved in the same file and in imported modules
  (`import lib.roles as roles`, `from lib import wad`) found next to the file or under the
  search roots (the directories checked, and contracts/). A call into a module that cannot be
  found is assumed state-changing;
- the builtins `send`, `raw_log`, `selfdestruct`, `create_minimal_proxy_to`, `create_forwarder_to`,
  `create_copy_of`, `create_from_blueprint`, and `raw_call` unless `is_static_call=True`;
- `.pop()` on a storage array (`self.queue.pop()`).

Reported, with file:line and a one-line message:
1. every call (function, builtin, struct or interface constructor, event in `log`) one of whose
   arguments or keyword arguments contains a state-changing call;
2. every binary operation, boolean operation, comparison, tuple, list or subscript with two or
   more side-effecting operands, or with one side-effecting operand and another operand that
   reads state (storage, an imported module's storage, a `staticcall`, a `@view` internal
   function, an address's balance or code) - the read may see the state before or after;
3. every assignment whose target and value both have side effects, an augmented assignment
   (`+=` ...) of storage whose right-hand side has side effects, and an assignment whose target
   index reads state while the value has side effects.

Usage: python tools/check_call_order.py [paths...]   (files or directories; default: contracts/)
Exit code: 0 no finding, 1 findings (printed one per line), 2 a file could not be read or parsed.
Importable: `check_paths(paths)` and `check_source(source, path)` return `Finding`s.
Uses Vyper's own parser (`vyper.ast.parse_to_ast`, Vyper 0.4.x).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from vyper.ast import nodes as vy
from vyper.ast import parse_to_ast

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONTRACTS = ROOT / "contracts"

# builtins that change state or emit something observable
STATE_CHANGING_BUILTINS = frozenset(
    {
        "send",
        "raw_log",
        "selfdestruct",
        "create_minimal_proxy_to",
        "create_forwarder_to",
        "create_copy_of",
        "create_from_blueprint",
    }
)
STORAGE_MUTATORS = frozenset({"pop", "append", "extend"})  # DynArray methods that write
ADDRESS_STATE = frozenset({"balance", "codehash", "codesize", "is_contract", "code"})

__all__ = ["CheckError", "Finding", "check_paths", "check_source", "main"]


class CheckError(Exception):
    """A source file could not be read or parsed; the message is one line."""


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


# ---------------------------------------------------------------- AST helpers


def _render(node: vy.VyperNode) -> str:
    """A short source-like name for a call target: `self._f`, `IERC20(...).transfer`."""
    if isinstance(node, vy.Name):
        return node.id
    if isinstance(node, vy.Attribute):
        return f"{_render(node.value)}.{node.attr}"
    if isinstance(node, vy.Call):
        return f"{_render(node.func)}({'...' if node.args or node.keywords else ''})"
    if isinstance(node, vy.Subscript):
        return f"{_render(node.value)}[...]"
    if isinstance(node, (vy.ExtCall, vy.StaticCall)):
        kw = "extcall" if isinstance(node, vy.ExtCall) else "staticcall"
        return f"{kw} {_render(node.value.func)}()"
    return type(node).__name__


def _root(node: vy.VyperNode) -> vy.VyperNode:
    """The base of an access chain: `self` in `self.a[i].b`."""
    while isinstance(node, (vy.Attribute, vy.Subscript)):
        node = node.value
    return node


def _walk(node: vy.VyperNode) -> Iterator[vy.VyperNode]:
    yield node
    yield from node.get_descendants()


def _decorators(fn: vy.FunctionDef) -> set[str]:
    names = set()
    for d in fn.decorator_list:
        if isinstance(d, vy.Call):
            d = d.func
        if isinstance(d, vy.Name):
            names.add(d.id)
    return names


def _keyword_is_true(call: vy.Call, name: str) -> bool:
    for kw in call.keywords:
        if kw.arg == name:
            return isinstance(kw.value, vy.NameConstant) and kw.value.value is True
    return False


# ---------------------------------------------------------------- modules


class _Module:
    def __init__(self, path: Path, display: str, tree: vy.Module):
        self.path = path
        self.display = display
        self.tree = tree
        self.functions: dict[str, vy.FunctionDef] = {n.name: n for n in tree.body if isinstance(n, vy.FunctionDef)}
        self.storage: set[str] = {
            n.target.id
            for n in tree.body
            if isinstance(n, vy.VariableDecl) and not n.is_constant and not n.is_immutable
        }
        # alias -> resolved module file (None: not found, e.g. a builtin interface module)
        self.imports: dict[str, Path | None] = {}


class _Analyzer:
    def __init__(self, roots: Sequence[Path]):
        self.roots = [Path(r).resolve() for r in roots]
        self._modules: dict[Path, _Module] = {}
        self._effects: dict[tuple[Path, str], str | None] = {}

    # ------------------------------------------------------------ loading

    def load(self, path: Path, source: str | None = None, display: str | None = None) -> _Module:
        key = path.resolve() if path.exists() else path
        if key in self._modules:
            return self._modules[key]
        display = display or _display(path)
        if source is None:
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise CheckError(f"{display}: cannot read: {e}") from None
        try:
            tree = parse_to_ast(source, module_path=str(path), resolved_path=str(path))
        except Exception as e:  # vyper raises SyntaxException and friends
            line = getattr(e, "lineno", None) or 0
            first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise CheckError(f"{display}:{line}: cannot parse: {first}") from None
        module = _Module(key, display, tree)
        self._modules[key] = module
        for node in tree.body:
            if isinstance(node, vy.Import):
                alias = node.alias or node.name.split(".")[-1]
                module.imports[alias] = self._resolve(path, node.name.split("."), 0)
            elif isinstance(node, vy.ImportFrom):
                alias = node.alias or node.name
                parts = (node.module.split(".") if node.module else []) + [node.name]
                module.imports[alias] = self._resolve(path, parts, node.level or 0)
        return module

    def _resolve(self, importer: Path, parts: list[str], level: int) -> Path | None:
        rel = Path(*parts)
        if level:
            base = importer.resolve().parent
            for _ in range(level - 1):
                base = base.parent
            bases = [base]
        else:
            bases = [importer.resolve().parent, *self.roots]
        for base in bases:
            for suffix in (".vy", ".vyi"):
                candidate = base / rel.with_suffix(suffix)
                if candidate.is_file():
                    return candidate.resolve()
        return None

    def module_for(self, module: _Module, alias: str) -> _Module | None:
        target = module.imports.get(alias)
        if target is None or target.suffix != ".vy":
            return None
        return self.load(target)

    # ------------------------------------------------------------ effects of calls

    def function_effect(self, module: _Module, name: str) -> str | None:
        """Why calling internal function `name` of `module` may change state, or None."""
        key = (module.path, name)
        if key in self._effects:
            return self._effects[key]
        fn = module.functions.get(name)
        if fn is None:
            return f"unknown function {name} (assumed state-changing)"
        if _decorators(fn) & {"view", "pure"}:
            self._effects[key] = None
            return None
        self._effects[key] = None  # recursion guard (Vyper forbids recursion anyway)
        reason = None
        for node in fn.get_descendants():
            reason = self._statement_effect(module, node) or self.call_effect(module, node)
            if reason:
                break
        self._effects[key] = reason
        return reason

    def _statement_effect(self, module: _Module, node: vy.VyperNode) -> str | None:
        if isinstance(node, vy.Log):
            return "emits a log"
        if isinstance(node, (vy.Assign, vy.AugAssign)) and self._is_state(module, node.target):
            return f"writes {_render(_root_attr(node.target))}"
        if (
            isinstance(node, vy.Call)
            and isinstance(node.func, vy.Attribute)
            and node.func.attr in STORAGE_MUTATORS
            and self._is_state(module, node.func.value)
        ):
            return f"writes {_render(node.func.value)}"
        return None

    def _is_state(self, module: _Module, target: vy.VyperNode) -> bool:
        """Whether an access chain is rooted in storage: `self.x...` or `module.x...`."""
        node = target
        while isinstance(node, (vy.Attribute, vy.Subscript)):
            value = node.value
            if isinstance(node, vy.Attribute) and isinstance(value, vy.Name):
                if value.id == "self":
                    return True
                other = self.module_for(module, value.id)
                if other is not None and node.attr in other.storage:
                    return True
                if value.id in module.imports and other is None:
                    return True  # unknown module: assume storage
            node = value
        return False

    def call_effect(self, module: _Module, node: vy.VyperNode) -> str | None:
        """Why this expression node itself changes state when evaluated, or None."""
        if isinstance(node, vy.ExtCall):
            return "extcall"
        if not isinstance(node, vy.Call) or node.is_extcall or node.is_staticcall:
            return None
        func = node.func
        if isinstance(func, vy.Name):
            if func.id in STATE_CHANGING_BUILTINS:
                return f"builtin {func.id}"
            if func.id == "raw_call" and not _keyword_is_true(node, "is_static_call"):
                return "raw_call without is_static_call=True"
            return None
        if not isinstance(func, vy.Attribute):
            return None
        owner = func.value
        if isinstance(owner, vy.Name) and owner.id == "self":
            reason = self.function_effect(module, func.attr)
            return f"self.{func.attr}() -> {reason}" if reason else None
        if isinstance(owner, vy.Name) and owner.id in module.imports:
            other = self.module_for(module, owner.id)
            if other is None:
                if module.imports[owner.id] is None:
                    return f"{owner.id}.{func.attr}() is in a module that was not found (assumed state-changing)"
                return None  # a .vyi interface file: only callable through extcall/staticcall
            reason = self.function_effect(other, func.attr)
            return f"{owner.id}.{func.attr}() -> {reason}" if reason else None
        if func.attr == "pop" and self._is_state(module, owner):
            return f"pops {_render(owner)}"
        return None

    def side_effects(self, module: _Module, expr: vy.VyperNode) -> list[tuple[vy.VyperNode, str]]:
        """State-changing calls inside `expr` (itself included), in source order."""
        out = []
        for node in _walk(expr):
            reason = self.call_effect(module, node)
            if reason:
                out.append((node, reason))
        return out

    def reads_state(self, module: _Module, expr: vy.VyperNode) -> bool:
        """Whether evaluating `expr` reads state that a call could change."""
        for node in _walk(expr):
            if isinstance(node, vy.StaticCall):
                return True
            if isinstance(node, vy.Attribute):
                parent = node.get_ancestor()
                is_callee = isinstance(parent, vy.Call) and parent.func is node
                if isinstance(node.value, vy.Name) and not is_callee:
                    if node.value.id == "self":
                        return True
                    other = self.module_for(module, node.value.id)
                    if other is not None and node.attr in other.storage:
                        return True
                if node.attr in ADDRESS_STATE and not is_callee:
                    return True
            if isinstance(node, vy.Call) and isinstance(node.func, vy.Attribute):
                owner = node.func.value
                target = None
                if isinstance(owner, vy.Name) and owner.id == "self":
                    target = (module, node.func.attr)
                elif isinstance(owner, vy.Name) and owner.id in module.imports:
                    other = self.module_for(module, owner.id)
                    if other is not None:
                        target = (other, node.func.attr)
                if target is not None:
                    fn = target[0].functions.get(target[1])
                    if fn is not None and "pure" not in _decorators(fn):
                        return True
        return False


def _root_attr(node: vy.VyperNode) -> vy.VyperNode:
    """`self.a` of `self.a[i].b`: the storage variable an access chain starts from."""
    while isinstance(node, (vy.Attribute, vy.Subscript)):
        if isinstance(node, vy.Attribute) and isinstance(node.value, vy.Name):
            return node
        node = node.value
    return node


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- rules


_KINDS = {
    vy.BinOp: "binary operation",
    vy.BoolOp: "boolean operation",
    vy.Compare: "comparison",
    vy.Tuple: "tuple",
    vy.List: "list literal",
    vy.Subscript: "subscript",
}


def _operands(node: vy.VyperNode) -> list[vy.VyperNode]:
    if isinstance(node, (vy.BinOp, vy.Compare)):
        return [node.left, node.right]
    if isinstance(node, vy.BoolOp):
        return list(node.values)
    if isinstance(node, (vy.Tuple, vy.List)):
        return list(node.elements)
    if isinstance(node, vy.Subscript):
        return [node.value, node.slice]
    return []


def _index_exprs(target: vy.VyperNode) -> list[vy.VyperNode]:
    """The index expressions of an assignment target: `i` and `j` in `self.a[i].b[j]`."""
    out = []
    node = target
    while isinstance(node, (vy.Attribute, vy.Subscript)):
        if isinstance(node, vy.Subscript):
            out.append(node.slice)
        node = node.value
    return out


def _check_module(an: _Analyzer, module: _Module) -> list[Finding]:
    findings: list[Finding] = []

    def report(node: vy.VyperNode, message: str) -> None:
        findings.append(Finding(module.display, node.lineno, node.col_offset, message))

    def where(effect_node: vy.VyperNode, at: vy.VyperNode) -> str:
        return "" if effect_node.lineno == at.lineno else f" (line {effect_node.lineno})"

    for fn in module.functions.values():
        for node in fn.get_descendants():
            # rule 1: a state-changing call inside another call's arguments
            if isinstance(node, vy.Call):
                args = list(node.args) + [kw.value for kw in node.keywords]
                effects = [e for a in args for e in an.side_effects(module, a)]
                if effects:
                    eff_node, reason = effects[0]
                    parent = node.get_ancestor()
                    what = (
                        f"log {_render(node.func)}" if isinstance(parent, vy.Log) else f"call to {_render(node.func)}"
                    )
                    if isinstance(parent, vy.ExtCall):
                        what = f"extcall {_render(node.func)}"
                    report(
                        node,
                        f"{what} has a state-changing call in its arguments: {_render(eff_node)}"
                        f"{where(eff_node, node)} [{reason}]; argument evaluation order is not guaranteed,"
                        " assign it to a local variable first",
                    )
                continue
            # rule 2: two side-effecting operands, or one next to a read of state
            kind = _KINDS.get(type(node))
            if kind is not None:
                ops = _operands(node)
                with_effects = [(op, an.side_effects(module, op)) for op in ops]
                hits = [(op, eff) for op, eff in with_effects if eff]
                if len(hits) >= 2:
                    names = ", ".join(_render(eff[0][0]) for _, eff in hits)
                    report(
                        node,
                        f"{kind} with {len(hits)} side-effecting operands ({names}); evaluation order is not"
                        " guaranteed, evaluate them into local variables first",
                    )
                elif len(hits) == 1:
                    op, eff = hits[0]
                    others = [o for o in ops if o is not op]
                    if any(an.reads_state(module, o) for o in others):
                        report(
                            node,
                            f"{kind} mixes a state-changing call {_render(eff[0][0])}{where(eff[0][0], node)}"
                            f" [{eff[0][1]}] with an operand that reads state; the read may happen before or"
                            " after the call, evaluate the call into a local variable first",
                        )
                continue
            # rule 3: assignments
            if isinstance(node, (vy.Assign, vy.AugAssign)):
                value_eff = an.side_effects(module, node.value)
                target_eff = an.side_effects(module, node.target)
                if target_eff and value_eff:
                    report(
                        node,
                        f"assignment with state-changing calls on both sides ({_render(target_eff[0][0])},"
                        f" {_render(value_eff[0][0])}); evaluation order is not guaranteed",
                    )
                elif value_eff and isinstance(node, vy.AugAssign) and an._is_state(module, node.target):
                    report(
                        node,
                        f"augmented assignment to {_render(_root_attr(node.target))} with a state-changing"
                        f" right-hand side {_render(value_eff[0][0])} [{value_eff[0][1]}]; the old value may be"
                        " read before or after the call, evaluate the call into a local variable first",
                    )
                elif value_eff and any(an.reads_state(module, i) for i in _index_exprs(node.target)):
                    report(
                        node,
                        f"assignment target index reads state while the value {_render(value_eff[0][0])}"
                        f" [{value_eff[0][1]}] changes it; evaluate the call into a local variable first",
                    )
                elif target_eff and an.reads_state(module, node.value):
                    report(
                        node,
                        f"assignment target has a state-changing call {_render(target_eff[0][0])} while the"
                        " value reads state; evaluate the call into a local variable first",
                    )
    return findings


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, int, str]] = set()
    out = []
    for f in sorted(findings):
        key = (f.path, f.line, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _vy_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(q for q in p.rglob("*.vy") if q.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise CheckError(f"{p}: no such file or directory")
    return files


def check_paths(paths: Sequence[str | Path] = (), search_paths: Sequence[str | Path] = ()) -> list[Finding]:
    """Findings in every `.vy` file under `paths` (default: contracts/). Raises CheckError."""
    roots = [Path(p) for p in paths] or [DEFAULT_CONTRACTS]
    search = [Path(p) for p in search_paths] + [r for r in roots if r.is_dir()] + [DEFAULT_CONTRACTS]
    an = _Analyzer(search)
    findings: list[Finding] = []
    for f in _vy_files(roots):
        findings += _check_module(an, an.load(f))
    return _dedupe(findings)


def check_source(source: str, path: str | Path = "<source>", search_paths: Sequence[str | Path] = ()) -> list[Finding]:
    """Findings in one Vyper source text; imports resolve next to `path` and under
    `search_paths` (and contracts/). Raises CheckError if it does not parse."""
    path = Path(path)
    an = _Analyzer([*map(Path, search_paths), DEFAULT_CONTRACTS])
    return _dedupe(_check_module(an, an.load(path, source=source, display=str(path))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="check_call_order.py",
        description="Flag state-changing Vyper calls whose evaluation order is not guaranteed.",
    )
    parser.add_argument("paths", nargs="*", type=Path, help=".vy files or directories (default: contracts/)")
    args = parser.parse_args(argv)
    try:
        findings = check_paths(args.paths)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in findings:
        print(f)
    checked = ", ".join(str(p) for p in args.paths) or _display(DEFAULT_CONTRACTS)
    if findings:
        print(f"{len(findings)} evaluation-order finding(s) in {checked}", file=sys.stderr)
        return 1
    print(f"no evaluation-order findings in {checked}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
