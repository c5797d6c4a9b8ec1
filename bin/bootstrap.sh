# shellcheck shell=bash
# Set up (or check) the project environment: .venv (Python 3.11+) and node_modules (Anvil).
#
# Sourced by bin/test and bin/demo; can also be run directly: `bash bin/bootstrap.sh`.
# Idempotent and fast when nothing changed: .venv/.bootstrap-stamp holds hashes of the inputs
# (requirements/*.txt, pyproject.toml and this script for .venv; package.json and package-lock.json
# for node_modules); pip / npm run only when a hash changes. Downloads come only from PyPI and the
# npm registry. Installer output goes to .venv/bootstrap.log (its tail is shown on failure).
# After sourcing: REPO_ROOT is set and PATH starts with node_modules/.bin and .venv/bin.
#
#   BOOTSTRAP_FORCE=1   re-run every install step even if the stamp matches
#   BOOTSTRAP_QUIET=1   no progress line when nothing has to be done

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

_bootstrap() (
    set -euo pipefail
    cd "$REPO_ROOT"

    say() { echo "bootstrap: $*" >&2; }
    die() { echo "bootstrap: error: $*" >&2; exit 1; }

    venv="$REPO_ROOT/.venv"
    stamp="$venv/.bootstrap-stamp"
    log="$venv/bootstrap.log"
    constraints="requirements/constraints.txt"

    for f in requirements/constraints.txt requirements/requirements.txt requirements/test.txt \
        pyproject.toml package.json package-lock.json; do
        [[ -f "$f" ]] || die "missing $f (is this a complete clone of the project?)"
    done

    # --- prerequisites: one clear line each ----------------------------------------------------
    command -v node >/dev/null 2>&1 || die "node not found on PATH (Node.js 20+ with npm is required)"
    command -v npm >/dev/null 2>&1 || die "npm not found on PATH (Node.js 20+ with npm is required)"
    node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
    ((node_major >= 20)) || die "Node.js 20+ is required, found $(node --version 2>/dev/null || echo none)"

    # Two bootstraps at once (bin/test and bin/demo in one fresh tree) would corrupt .venv:
    # serialize on this script's own file (read-only lock: no extra file in the tree).
    if command -v flock >/dev/null 2>&1; then
        exec 9<"$REPO_ROOT/bin/bootstrap.sh"
        flock 9
    fi

    # --- what the environment should be, what it is ----------------------------------------------
    py_hash="$(cat requirements/constraints.txt requirements/requirements.txt requirements/test.txt \
        pyproject.toml bin/bootstrap.sh | sha256sum | cut -c1-32)"
    node_hash="$(cat package.json package-lock.json | sha256sum | cut -c1-32)"
    have_py="" have_node=""
    if [[ -f "$stamp" ]]; then
        have_py="$(sed -n 's/^python //p' "$stamp")"
        have_node="$(sed -n 's/^node //p' "$stamp")"
    fi
    write_stamp() { printf 'python %s\nnode %s\n' "$have_py" "$have_node" >"$stamp.tmp" && mv "$stamp.tmp" "$stamp"; }

    need_py=1 need_node=1
    if [[ "${BOOTSTRAP_FORCE:-0}" != 1 ]]; then
        if [[ "$have_py" == "$py_hash" && -x "$venv/bin/python" && -x "$venv/bin/keeper" ]]; then need_py=0; fi
        if [[ "$have_node" == "$node_hash" && -x node_modules/.bin/anvil ]]; then need_node=0; fi
    fi
    if [[ $need_py == 0 && $need_node == 0 ]]; then
        [[ "${BOOTSTRAP_QUIET:-0}" == 1 ]] || say "environment up to date (.venv, node_modules)"
        exit 0
    fi

    # run a command with its output in the log; on failure show the log's tail and stop
    logged() {
        local what="$1"
        shift
        echo "### $(date -u +%FT%TZ) $*" >>"$log"
        if ! "$@" >>"$log" 2>&1; then
            echo "---- last lines of $log ----" >&2
            tail -n 25 "$log" >&2
            die "$what failed (full output: $log)"
        fi
    }

    # --- Python: .venv ------------------------------------------------------------------------------
    if [[ $need_py == 1 ]]; then
        if [[ -e "$venv" ]] && ! "$venv/bin/python" -c \
            'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; then
            say "existing .venv is broken or older than Python 3.11: recreating it"
            rm -rf "$venv"
        fi
        if [[ ! -x "$venv/bin/python" ]]; then
            py=""
            if command -v python3.11 >/dev/null 2>&1 && python3.11 -c '' >/dev/null 2>&1; then
                py="python3.11"
            elif command -v python3 >/dev/null 2>&1 &&
                python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
                py="python3"
            else
                die "Python 3.11 not found (need python3.11, or python3 >= 3.11, on PATH)"
            fi
            say "creating .venv with $("$py" --version 2>&1) ($(command -v "$py"))"
            if ! "$py" -m venv "$venv" >/dev/null 2>&1; then
                rm -rf "$venv"
                die "'$py -m venv' failed (on Debian/Ubuntu: apt-get install python3.11-venv)"
            fi
        fi
        vpy="$venv/bin/python"
        have_py=""
        write_stamp
        pip=("$vpy" -m pip install --progress-bar off --disable-pip-version-check)

        say "upgrading pip, setuptools, wheel"
        logged "upgrading pip/setuptools/wheel" "${pip[@]}" --upgrade pip setuptools wheel -c "$constraints"

        # The eth-brownie wheels are mypyc-compiled and cannot compile Vyper 0.4 (TOOLCHAIN.md,
        # pitfall 1): build it from its sdist, uncompiled, with the venv's setuptools and wheel.
        if ! "$vpy" -c 'import importlib.metadata as md, sys, brownie.project.compiler.vyper as m
sys.exit(0 if md.version("eth-brownie") == "1.22.2" and m.__file__.endswith(".py") else 1)' >/dev/null 2>&1; then
            say "installing eth-brownie 1.22.2 from source, uncompiled"
            logged "installing eth-brownie 1.22.2 from source" env BROWNIE_NOCOMPILE=1 \
                "${pip[@]}" --force-reinstall --no-deps --no-build-isolation \
                --no-binary eth-brownie -c "$constraints" "eth-brownie==1.22.2"
        fi

        say "installing requirements/requirements.txt + test.txt (brownie's pins as constraints)"
        logged "pip install of the requirements" "${pip[@]}" -c "$constraints" "eth-brownie==1.22.2" \
            -r requirements/requirements.txt -r requirements/test.txt

        say "installing the keeper package (editable)"
        logged "pip install -e ." "${pip[@]}" --no-deps --no-build-isolation -e .

        logged "pip check (conflicting packages)" "$vpy" -m pip check
        "$vpy" -c 'import brownie.project.compiler.vyper as m, sys; sys.exit(not m.__file__.endswith(".py"))' ||
            die "eth-brownie is the compiled wheel (cannot compile Vyper 0.4): rerun with BOOTSTRAP_FORCE=1"
        have_py="$py_hash"
        write_stamp
    fi

    # --- Node: Anvil ------------------------------------------------------------------------------
    if [[ $need_node == 1 ]]; then
        if [[ "$(uname -sm)" != "Linux x86_64" ]]; then
            die "Anvil comes from @foundry-rs/anvil-linux-amd64: Linux x86_64 only (this is $(uname -sm))"
        fi
        say "installing node_modules (npm ci: Anvil 1.7.1)"
        logged "npm ci" npm ci --ignore-scripts --no-audit --no-fund
        v="$(node_modules/.bin/anvil --version 2>/dev/null | head -n1)" ||
            die "node_modules/.bin/anvil does not run"
        say "${v:-anvil version unknown}"
        have_node="$node_hash"
        write_stamp
    fi
    say "done"
)

if ! _bootstrap; then
    unset -f _bootstrap
    # sourced: return to the caller (stopped by its `set -e`); run directly: exit
    return 1 2>/dev/null || exit 1
fi
unset -f _bootstrap

PATH="$REPO_ROOT/node_modules/.bin:$REPO_ROOT/.venv/bin:$PATH"
export PATH
