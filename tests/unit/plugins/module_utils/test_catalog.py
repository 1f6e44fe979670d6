from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.selfheal.core.plugins.module_utils.catalog import (
    PolicyFileError,
    check_roles,
    load_catalog,
    load_topology,
    parse_catalog,
    parse_topology,
)
from ansible_collections.selfheal.core.plugins.module_utils.signals import from_alertmanager

REPO = Path(__file__).resolve().parents[4]


def _type(**kw: Any) -> dict[str, Any]:
    return {"name": "service_down", "match": [{"labels": {"alertname": "ServiceDown"}}], **kw}


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ([], "c.yml: must be a mapping"),
        ({"incident_types": []}, "c.yml: incident_types: must be a non-empty list"),
        ({"incident_types": [_type()], "extra": 1}, "c.yml: extra: unknown key"),
        ({"version": 2, "incident_types": [_type()]}, "c.yml: version: unsupported version"),
        ({"incident_types": [_type(name="Service Down")]}, "c.yml: incident_types[0].name: must be a lower-case"),
        ({"incident_types": [_type(), _type()]}, "c.yml: incident_types[1].name: duplicate incident type"),
        ({"incident_types": [_type(mode="yolo")]}, "c.yml: incident_types[0].mode: must be one of"),
        ({"incident_types": [_type(mode="auto", playbook="p.yml", promotion={"automatic": True})]},
         "c.yml: incident_types[0].promotion.automatic: only a propose type can promote itself"),
        ({"incident_types": [_type(mode="propose", playbook="p.yml", promotion={"automatic": "yes"})]},
         "c.yml: incident_types[0].promotion.automatic: must be true or false"),
        ({"incident_types": [_type(approval={"timeout": 0})]},
         "c.yml: incident_types[0].approval.timeout: must be a number from 1"),
        ({"incident_types": [_type(approval={"ttl": 5})]}, "c.yml: incident_types[0].approval.ttl: unknown key"),
        ({"incident_types": [_type(verification={"promql": ""})]},
         "c.yml: incident_types[0].verification.promql: must be a PromQL condition"),
        ({"incident_types": [_type(slo={"objective": 0.99})]},
         "c.yml: incident_types[0].slo.objective: needs slo.error_ratio_query"),
        ({"incident_types": [_type(slo={"error_ratio_query": "e[{window}]"})]},
         "c.yml: incident_types[0].slo.objective: is required"),
        ({"incident_types": [_type(slo={"error_ratio_query": "e[5m]", "objective": 0.9})]},
         "c.yml: incident_types[0].slo.error_ratio_query: error_ratio_query must be PromQL with the placeholder"),
        ({"incident_types": [_type(slo={"error_ratio_query": "e[{window}]", "objective": 0.9,
                                        "fast_windows": ["5m", "1 hour"]})]},
         "c.yml: incident_types[0].slo.fast_windows: window '1 hour' is not a Prometheus duration"),
        ({"incident_types": [_type(mode="auto")]}, "c.yml: incident_types[0].playbook: mode auto needs a playbook"),
        ({"incident_types": [_type(match=[{}])]}, "c.yml: incident_types[0].match[0]: an empty match rule"),
        ({"incident_types": [_type(match=[{"labels": {"a": 1}}])]},
         "c.yml: incident_types[0].match[0].labels.a: must be a string"),
        ({"incident_types": [_type(match=[{"labels_re": {"a": "("}}])]},
         "c.yml: incident_types[0].match[0].labels_re.a: not a valid regular expression"),
        ({"incident_types": [_type(match=[{"lables": {}}])]}, "c.yml: incident_types[0].match[0].lables: unknown key"),
        ({"incident_types": [_type(never_automate="no")]}, "c.yml: incident_types[0].never_automate: must be true"),
        ({"incident_types": [_type(role="a.b.c", parameters=["x"])]},
         "c.yml: incident_types[0].parameters: must be a mapping of lower-case names"),
        ({"incident_types": [_type(parameters={"threshold": 90})]},
         "c.yml: incident_types[0].parameters: needs a role"),
    ],
)
def test_catalog_errors_name_file_path_and_key(data: Any, where: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        parse_catalog(data, "c.yml")
    assert str(info.value).startswith(where), str(info.value)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"services": {"a": {"depends_on": ["b"]}}}, "t.yml: services.a.depends_on[0]: unknown service 'b'"),
        ({"services": {"a": {"depends_on": ["b"]}, "b": {"depends_on": ["a"]}}},
         "t.yml: services.a.depends_on: dependency cycle"),
        ({"services": {"a": {"depends_on": "b"}}}, "t.yml: services.a.depends_on: must be a list"),
        ({"services": {"a": {"runs_on": []}}}, "t.yml: services.a.runs_on: unknown key"),
    ],
)
def test_topology_errors_name_file_path_and_key(data: Any, where: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        parse_topology(data, "t.yml")
    assert str(info.value).startswith(where), str(info.value)


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="no such file"):
        load_catalog(str(tmp_path / "missing.yml"))
    broken = tmp_path / "broken.yml"
    broken.write_text("incident_types: [\n")
    with pytest.raises(PolicyFileError, match=f"{broken}: not valid YAML"):
        load_catalog(str(broken))


def test_first_matching_type_wins_and_regexes_match_whole_values() -> None:
    catalog = parse_catalog({"incident_types": [
        {"name": "db", "match": [{"labels": {"alertname": "PostgresDown"}}]},
        {"name": "svc", "match": [{"labels_re": {"alertname": "Service(Down|Unhealthy)"}},
                                  {"source": "webhook", "labels": {"k": "v"}}]},
    ]})

    def classify(labels: dict[str, str]) -> str | None:
        itype = catalog.classify(from_alertmanager({"labels": labels}, 0.0))
        return itype.name if itype else None

    assert classify({"alertname": "PostgresDown"}) == "db"
    assert classify({"alertname": "ServiceUnhealthy"}) == "svc"
    assert classify({"alertname": "ServiceDownish"}) is None
    assert classify({"alertname": "X", "k": "v"}) is None  # wrong source


def test_the_shipped_catalog_and_topology_load() -> None:
    catalog = load_catalog(str(REPO / "rulebooks" / "catalog.yml"))
    assert catalog.get("service_down") is not None
    # every role and step it names is there (what the daemon checks at start)
    check_roles(catalog, [str(REPO / ".build" / "collections")])  # make collection links it there
    topology = load_topology(str(REPO / "rulebooks" / "topology.yml"))
    assert topology.depends_on


def test_a_role_that_is_not_installed_or_lacks_an_entry_point_fails_at_start(tmp_path: Path) -> None:
    catalog = parse_catalog({"incident_types": [
        {"name": "ok", "match": [{"labels": {"alertname": "A"}}], "role": "acme.fix.good", "mode": "auto"},
        {"name": "typo", "match": [{"labels": {"alertname": "B"}}], "role": "acme.fix.goood", "mode": "auto"},
    ]}, "catalog.yml")
    tasks = tmp_path / "ansible_collections" / "acme" / "fix" / "roles" / "good" / "tasks"
    tasks.mkdir(parents=True)
    for entry in ("diagnose", "remediate", "verify"):
        (tasks / f"{entry}.yml").write_text("---\n[]\n")
    with pytest.raises(PolicyFileError, match=r"catalog.yml: incident_types\[0\].role: role acme.fix.good has no "
                                              r"rollback entry point"):
        check_roles(catalog, [str(tmp_path)])
    (tasks / "rollback.yml").write_text("---\n[]\n")
    with pytest.raises(PolicyFileError, match=r"incident_types\[1\].role: role acme.fix.goood is not installed"):
        check_roles(catalog, [str(tmp_path)])
    with pytest.raises(PolicyFileError, match=r"incident_types\[0\].role: selfheal.core.remediate needs the role"):
        parse_catalog({"incident_types": [{"name": "x", "match": [{"labels": {"a": "b"}}], "mode": "auto",
                                           "playbook": "selfheal.core.remediate"}]}, "catalog.yml")


def test_a_step_the_role_does_not_take_fails_at_start_with_file_path_and_key(tmp_path: Path) -> None:
    role = tmp_path / "ansible_collections" / "acme" / "fix" / "roles" / "good"
    (role / "tasks").mkdir(parents=True)
    for entry in ("diagnose", "remediate", "verify", "rollback"):
        (role / "tasks" / f"{entry}.yml").write_text("---\n[]\n")
    (role / "meta").mkdir()
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  remediate:\n    options:\n      selfheal_step:\n        type: str\n"
        "        choices: [restart, restore_config]\n")

    def catalog(steps: list[str]) -> Any:
        return parse_catalog({"incident_types": [{"name": "t", "match": [{"labels": {"a": "b"}}],
                                                  "role": "acme.fix.good", "mode": "auto", "steps": steps}]},
                             "catalog.yml")

    check_roles(catalog(["restart", "restore_config"]), [str(tmp_path)])
    with pytest.raises(PolicyFileError, match=r"catalog.yml: incident_types\[0\].steps\[1\]: role acme.fix.good has "
                                              r"no step 'restore_confg' \(its remediate entry point takes restart, "
                                              r"restore_config"):
        check_roles(catalog(["restart", "restore_confg"]), [str(tmp_path)])
    # a role that declares no steps takes the default one only
    (role / "meta" / "argument_specs.yml").unlink()
    check_roles(catalog(["remediate"]), [str(tmp_path)])
    with pytest.raises(PolicyFileError, match=r"steps\[0\]: role acme.fix.good has no step 'restart'"):
        check_roles(catalog(["restart"]), [str(tmp_path)])
