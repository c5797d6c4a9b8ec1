"""The operator kit in ops/: the Grafana dashboard, the Prometheus alerting rules and the systemd
unit (docs/keeper.md, "Operating").

Always run: the dashboard is valid JSON whose every panel has a datasource and a query; every
metric name the dashboard, the rules and the rules' unit tests use is one keeper/metrics.py
exports; every rule has `for:`, a severity and a runbook link to a docs/keeper.md section; the
unit file has the keys and hardening the docs promise. With promtool on PATH (CI installs it:
.ci/run): `promtool check rules`, `promtool test rules`, and the dashboard's queries parsed by
promtool. With systemd-analyze on PATH: `systemd-analyze verify` of the unit.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

from keeper.metrics import KeeperMetrics

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "ops"
DASHBOARD = OPS / "grafana" / "keeper-dashboard.json"
RULES = OPS / "prometheus" / "keeper-alerts.yml"
RULE_TESTS = OPS / "prometheus" / "keeper-alerts.test.yml"
UNIT = OPS / "systemd" / "keeper.service"
KEEPER_DOC = ROOT / "docs" / "keeper.md"

# metrics Prometheus itself attaches to every target: allowed next to the keeper's own
PROMETHEUS_METRICS = {"up"}

PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
PROMQL_KEYWORDS |= {"group_left", "group_right", "inf", "nan", "atan2"}


def exported_names() -> set[str]:
    """Every series name the keeper's registry exposes: counters with `_total` (and `_created`),
    histograms with `_bucket`, `_count` and `_sum`; every labelled metric has its children."""
    names = set()
    for family in KeeperMetrics().registry.collect():
        names.update(sample.name for sample in family.samples)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.:])[a-zA-Z_:][\w:]*", text):
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or m.group().lower() in PROMQL_KEYWORDS:
            continue  # a function, an aggregation or a keyword
        names.add(m.group())
    return names


def test_metric_name_extraction():
    expr = (
        'histogram_quantile(0.95, sum by (le, instance) (rate(keeper_block_processing_seconds_bucket{job=~"$job",'
        ' le=~"2(\\\\.0)?"}[$__rate_interval]))) > 5 and on (job) up == 1 unless absent(keeper_dry_run offset 5m)'
    )
    assert metric_names(expr) == {"keeper_block_processing_seconds_bucket", "up", "keeper_dry_run"}
    assert metric_names("sum(increase(keeper_missed_liquidations_total[1h])) * 60") == {
        "keeper_missed_liquidations_total"
    }


def test_exported_names_include_the_suffixes():
    names = exported_names()
    assert {"keeper_liquidations_sent_total", "keeper_block_processing_seconds_bucket", "keeper_head_block"} <= names
    assert "keeper_liquidations_sent" not in names  # what Prometheus scrapes is the _total series


def assert_known(names: set[str], where: str) -> None:
    unknown = sorted(names - exported_names() - PROMETHEUS_METRICS)
    assert not unknown, f"{where} uses metrics keeper/metrics.py does not export: {unknown}"


# ---------------------------------------------------------------- the dashboard


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def leaf_panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        if p["type"] == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def dashboard_queries(d: dict) -> list[str]:
    return [t["expr"] for p in leaf_panels(d) for t in p["targets"]]


def variable_queries(d: dict) -> list[str]:
    """The template variables' label_values(SELECTOR, label) selectors."""
    out = []
    for v in d["templating"]["list"]:
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
        assert m, f"variable {v['name']}: expected label_values(selector, label), got {q!r}"
        out.append(m.group(1))
    return out


def test_dashboard_is_an_importable_grafana_model():
    d = dashboard()
    assert d["schemaVersion"] >= 39  # Grafana 11
    assert d["uid"] and d["title"]
    assert d.get("id") is None  # an export for sharing: Grafana assigns the id on import
    inputs = {i["name"]: i for i in d["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    ids = [p["id"] for p in d["panels"]] + [p["id"] for p in leaf_panels(d) if p not in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_panel_has_a_datasource_and_a_query():
    d = dashboard()
    prometheus = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    panels = leaf_panels(d)
    assert len(panels) >= 20
    for p in panels:
        assert p.get("datasource") == prometheus, p["title"]
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t.get("expr", "").strip(), f"panel {p['title']!r} has an empty query"
            assert t.get("datasource", prometheus) == prometheus, p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        assert p.get("description"), f"panel {p['title']!r}: say what it shows"
    for v in d["templating"]["list"]:
        assert v["datasource"] == prometheus, v["name"]


def test_dashboard_uses_only_exported_metrics():
    d = dashboard()
    used = set()
    for q in dashboard_queries(d) + variable_queries(d):
        used |= metric_names(q)
    assert_known(used, "the dashboard")
    # what the operator kit promises to show (docs/keeper.md, "Operating")
    for name in (
        "keeper_liquidations_sent_total",
        "keeper_liquidations_succeeded_total",
        "keeper_liquidations_failed_total",
        "keeper_missed_liquidations_total",
        "keeper_detection_latency_blocks_bucket",
        "keeper_block_processing_seconds_bucket",
        "keeper_head_lag_seconds",
        "keeper_node_stale",
        "keeper_rpc_errors_total",
        "keeper_balance_eth",
        "keeper_low_balance",
        "keeper_accounts_tracked",
        "keeper_accounts_liquidatable",
        "keeper_dry_run",
    ):
        assert name in used, f"the dashboard does not show {name}"


# ---------------------------------------------------------------- the alerting rules


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def doc_anchors() -> set[str]:
    """The ids mkdocs gives docs/keeper.md's headings (markdown's toc slugify)."""
    text = re.sub(r"^```.*?^```", "", KEEPER_DOC.read_text(), flags=re.S | re.M)
    return {slugify(m.group(1).strip(), "-") for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M)}


def test_every_alert_has_for_severity_and_a_runbook():
    anchors = doc_anchors()
    alerts = rules()
    assert len(alerts) >= 8
    for r in alerts:
        name = r.get("alert")
        assert name, f"only alerting rules here, got {r}"
        assert re.fullmatch(r"\d+[smh]", str(r.get("for", ""))), f"{name}: needs for:"
        assert r["labels"]["severity"] in {"critical", "warning"}, name
        ann = r["annotations"]
        assert ann.get("summary") and ann.get("description"), name
        doc, _, anchor = ann["runbook_url"].partition("#")
        assert doc == "docs/keeper.md", name
        assert anchor in anchors, f"{name}: runbook_url anchor #{anchor} is no heading of docs/keeper.md"


def test_alerts_cover_the_failure_modes():
    used = {r["alert"]: metric_names(r["expr"]) for r in rules()}
    wanted = {
        "KeeperDown": {"up"},
        "KeeperMissedLiquidation": {"keeper_missed_liquidations_total"},
        "KeeperSlowLiquidation": {"keeper_detection_latency_blocks_bucket"},
        "KeeperNodeStale": {"keeper_node_stale"},
        "KeeperNotProcessingBlocks": {"keeper_head_block"},
        "KeeperLowBalance": {"keeper_low_balance"},
        "KeeperLiquidationsFailing": {"keeper_liquidations_failed_total"},
    }
    for alert, names in wanted.items():
        assert alert in used, alert
        assert names <= used[alert], alert


def test_rules_use_only_exported_metrics():
    used = set()
    for r in rules():
        used |= metric_names(r["expr"])
    assert_known(used, "ops/prometheus/keeper-alerts.yml")
    series = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for s in case["input_series"]:
            series |= metric_names(s["series"])
    assert_known(series, "ops/prometheus/keeper-alerts.test.yml")


def tool(name: str, why_missing: str) -> str:
    """The path of `name`, or skip the test saying why it is missing. (A skip inside the test: the
    brownie plugin reports a skipif marker's reason as a bare "Skipped".)"""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not on PATH ({why_missing})")
    return path


def promtool(*args: str) -> subprocess.CompletedProcess:
    path = tool("promtool", "Debian: apt-get install prometheus; .ci/run unpacks it into build/tools")
    return subprocess.run([path, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_promtool_check_rules():
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


def test_promtool_rule_unit_tests():
    out = promtool("test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_queries_parse(tmp_path):
    """Each query, with Grafana's variables filled in, as a recording rule: promtool parses it."""
    fill = {"$__rate_interval": "2m", "$__range": "6h", "$__interval": "1m", "$job": "keeper", "$instance": ".*"}
    records = []
    for i, q in enumerate(dashboard_queries(dashboard())):
        for var, value in fill.items():
            q = q.replace(var, value)
        assert "$" not in q, f"unknown variable in {q}"
        records.append({"record": f"dashboard:query_{i}", "expr": q})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------- the systemd unit


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def exec_start_args() -> list[str]:
    line = unit()["Service"]["ExecStart"].replace("\\\n", " ").replace("\\", " ")
    return line.split()


def test_unit_has_the_required_keys_and_hardening():
    u = unit()
    assert set(u.sections()) == {"Unit", "Service", "Install"}
    s = u["Service"]
    assert s["User"] and s["User"] != "root"
    assert s["EnvironmentFile"].startswith("/etc/")
    assert s["Restart"] == "on-failure"
    assert s["RestartSec"] and u["Unit"]["StartLimitBurst"] and u["Unit"]["StartLimitIntervalSec"]
    assert s["KillSignal"] == "SIGINT"  # the keeper's clean stop (KeyboardInterrupt)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert s[key] == value, key
    assert "KEEPER_PRIVATE_KEY" not in s.get("Environment", ""), "the key belongs in the EnvironmentFile"
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_unit_runs_keeper_run_with_its_state_dir_and_metrics_port():
    from keeper.cli import run

    args = exec_start_args()
    assert args[0].endswith("/.venv/bin/keeper") and args[1] == "run"
    ctx = run.make_context("run", args[2:])  # the options exist and parse (nothing runs)
    state_dir = str(ctx.params["state_dir"])
    assert ctx.params["metrics_port"] == 9108
    assert not ctx.params["dry_run"]
    s = unit()["Service"]
    assert state_dir in s["ReadWritePaths"].split()
    assert state_dir == "/var/lib/" + s["StateDirectory"]
    assert str(ctx.params["status_file"]).startswith(state_dir + "/")


# keys newer than the systemd on the machine (RestartSteps, RestartMaxDelaySec: systemd 254)
NEWER_KEYS = re.compile(r"Unknown key '(RestartSteps|RestartMaxDelaySec)' in section \[Service\], ignoring\.$")


def test_systemd_analyze_verify(tmp_path):
    """systemd's own parser; the ExecStart binary must exist, so it points at this checkout's."""
    systemd_analyze = tool("systemd-analyze", "not a systemd host: the configparser checks above still ran")
    keeper = ROOT / ".venv" / "bin" / "keeper"
    if not keeper.exists():
        pytest.skip("no .venv/bin/keeper (run bin/bootstrap.sh)")
    path = tmp_path / "keeper.service"
    path.write_text(UNIT.read_text().replace("/opt/crossmargin/.venv/bin/keeper", str(keeper)))
    out = subprocess.run(
        [systemd_analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    # verify exits 0 on unknown keys and unparsable values too: every line it prints is a finding
    findings = [line for line in (out.stdout + out.stderr).splitlines() if line.strip() and not NEWER_KEYS.search(line)]
    assert out.returncode == 0 and not findings, out.stdout + out.stderr
