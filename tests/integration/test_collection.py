"""The collection as users get it: built, installed, documented."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

from ansible_collections.selfheal.core.extensions.eda.plugins.event_source import alertmanager, webhook
from ansible_collections.selfheal.core.extensions.eda.plugins.event_source._ingest import COMMON_ARGS

BIN = Path(sys.executable).parent
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py"))
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())
SOURCES = sorted(p for p in (REPO / "extensions" / "eda" / "plugins" / "event_source").glob("[!_]*.py"))
SOURCE_MODULES: dict[str, Any] = {"alertmanager": alertmanager, "webhook": webhook}


def _run(*cmd: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    out = tmp_path_factory.mktemp("dist")
    built = _run(str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), ".")
    assert built.returncode == 0, built.stderr
    [tarball] = out.glob("selfheal-core-*.tar.gz")
    dest = tmp_path_factory.mktemp("collections")
    # Only `dest` is searched, or ansible-galaxy finds this checkout's link and installs nothing.
    inst = _run(str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--force", "-p", str(dest),
                str(tarball), env={"ANSIBLE_COLLECTIONS_PATH": str(dest)})
    assert inst.returncode == 0, inst.stderr
    assert (dest / "ansible_collections" / "selfheal" / "core" / "MANIFEST.json").exists(), inst.stdout
    yield tarball, dest


def test_tarball_holds_the_collection_and_nothing_of_the_workshop(installed: tuple[Path, Path]) -> None:
    tarball = installed[0]
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for expected in ("MANIFEST.json", "LICENSE", "meta/runtime.yml", "rulebooks/self_healing.yml",
                     "playbooks/remediate_service_down.yml", "extensions/eda/plugins/event_source/alertmanager.py",
                     "plugins/module_utils/signals.py", "roles/service/meta/argument_specs.yml"):
        assert expected in names, expected
    for unwanted in (".lab", ".venv", ".build", "lab", "bench", "Makefile"):
        assert not any(n == unwanted or n.startswith(unwanted + "/") for n in names), unwanted
    manifest = json.loads(_member(tarball, "MANIFEST.json"))
    assert manifest["collection_info"]["namespace"] == "selfheal"
    assert manifest["collection_info"]["name"] == "core"


def _member(tarball: Path, name: str) -> str:
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read().decode()


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_every_module(installed: tuple[Path, Path], module: str) -> None:
    dest = installed[1]
    doc = _run(str(BIN / "ansible-doc"), "--json", "-t", "module", f"selfheal.core.{module}",
               env={"ANSIBLE_COLLECTIONS_PATH": str(dest)})
    assert doc.returncode == 0, doc.stderr
    data = json.loads(doc.stdout)[f"selfheal.core.{module}"]
    assert data["doc"]["short_description"]
    assert data["examples"].strip() and data["return"]
    text = _run(str(BIN / "ansible-doc"), "-t", "module", f"selfheal.core.{module}",
                env={"ANSIBLE_COLLECTIONS_PATH": str(dest)})
    assert text.returncode == 0 and "EXAMPLES" in text.stdout and "RETURN VALUES" in text.stdout


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_renders_every_role(installed: tuple[Path, Path], role: str) -> None:
    dest = installed[1]
    doc = _run(str(BIN / "ansible-doc"), "-t", "role", f"selfheal.core.{role}",
               env={"ANSIBLE_COLLECTIONS_PATH": str(dest), "ANSIBLE_NOCOLOR": "1"})
    assert doc.returncode == 0, doc.stderr
    assert "ENTRY POINT: *main*" in doc.stdout


@pytest.mark.parametrize("role", ROLES)
def test_role_defaults_agree_with_argument_specs(role: str) -> None:
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = specs["main"]["options"]
    for name, value in defaults.items():
        assert name.startswith(f"{role}_"), f"{name} is not prefixed with the role name"
        assert name in options, f"{name} has a default but no argument spec"
        assert options[name].get("default") == value, f"{name}: default {value!r} vs spec {options[name]}"
    for name, spec in options.items():
        assert spec.get("required") or name in defaults, f"{name} is optional but has no default"


@pytest.mark.parametrize(("role", "given", "named"), [
    ("service", {}, "service_name is required"),
    ("service", {"service_name": "demo", "service_manager": "command"}, "service_command is required"),
    ("disk", {}, "disk_path is required"),
    ("disk", {"disk_path": "/srv", "disk_target": 95}, "0 < disk_target <= disk_threshold"),
    ("postgres", {"postgres_socket_dir": "pgsock"}, "postgres_socket_dir must be the absolute path"),
    ("postgres", {"postgres_socket_dir": "/run/postgresql", "postgres_per_pass_percent": 40},
     "0 < postgres_per_pass_percent <= 15"),
], ids=lambda v: v if isinstance(v, str) and " " not in v else None)
def test_a_type_role_without_its_settings_names_them_and_changes_nothing(
        tmp_path: Path, role: str, given: dict[str, Any], named: str) -> None:
    """Each type's role, run by hand as the docs show, refuses before its first change when a setting it
    needs is missing or out of range, and says which one."""
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"ansible.builtin.include_role": {"name": f"selfheal.core.{role}"}, "vars": given}]}]))
    run = _run(str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play),
               env={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                    "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".build" / "collections")})
    assert run.returncode == 2, run.stdout[-2000:]
    assert named in " ".join(run.stdout.split()), run.stdout[-2000:]
    assert "Nothing was changed" in run.stdout and re.search(r"changed=0\s", run.stdout), run.stdout[-2000:]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_event_source_documentation_matches_its_arguments(source: Path) -> None:
    tree = ast.parse(source.read_text())
    docs = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body  # type: ignore[attr-defined]
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("DOCUMENTATION", "EXAMPLES")}
    doc = yaml.safe_load(docs["DOCUMENTATION"])
    assert doc["short_description"] and doc["description"]
    rulebook = yaml.safe_load(docs["EXAMPLES"])
    assert rulebook[0]["sources"][0].get(f"selfheal.core.{source.stem}") is not None
    module = SOURCE_MODULES[source.stem]
    args = {**COMMON_ARGS, **module._ARGS}
    assert set(doc["options"]) == set(args)
    for name, (kind, default, _secret) in args.items():
        assert doc["options"][name]["type"] == {str: "str", int: "int", bool: "bool", float: "float"}[kind], name
        assert doc["options"][name].get("default") == default, name


def test_rulebook_and_playbooks_resolve_from_the_installed_collection(installed: tuple[Path, Path]) -> None:
    dest = installed[1]
    env = {"ANSIBLE_COLLECTIONS_PATH": str(dest)}
    for playbook in ("selfheal.core.remediate", "selfheal.core.remediate_service_down"):
        syntax = _run(str(BIN / "ansible-playbook"), "--syntax-check", playbook, env=env)
        assert syntax.returncode == 0, syntax.stderr
    root = dest / "ansible_collections" / "selfheal" / "core"
    rulebook = yaml.safe_load((root / "rulebooks" / "self_healing.yml").read_text())
    names = {r["action"].get("run_playbook", {}).get("name") for r in rulebook[0]["rules"]} - {None}
    # the rulebook runs what the event's catalog entry names: those playbooks and roles must be there
    assert "{{ event.incident.playbook }}" in names, names
    catalog = yaml.safe_load((root / "rulebooks" / "catalog.yml").read_text())
    named = {t.get("playbook", "selfheal.core.remediate") for t in catalog["incident_types"] if t.get("role")}
    names = {n for n in names if "{{" not in n} | named
    for name in names:
        assert (root / "playbooks" / f"{name.split('.')[-1]}.yml").exists(), name
    for role in {t["role"] for t in catalog["incident_types"] if t.get("role")}:
        for entry in ("diagnose", "remediate", "verify", "rollback"):
            assert (root / "roles" / role.split(".")[-1] / "tasks" / f"{entry}.yml").exists(), (role, entry)


def test_make_help_lists_every_target_once() -> None:
    makefile = (REPO / "Makefile").read_text()
    declared = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", makefile, re.M)
    assert declared is not None
    phony = set(declared.group(1).replace("\\\n", " ").split())
    defined = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.M))
    assert phony == defined, f"declared .PHONY but not defined: {phony - defined}; not declared: {defined - phony}"
    shown = _run("make", "-s", "--no-print-directory", "help")
    assert shown.returncode == 0, shown.stderr
    listed = [line.split()[1] for line in shown.stdout.splitlines()]
    assert sorted(listed) == sorted(defined), shown.stdout
    assert all(len(line.split()) > 2 for line in shown.stdout.splitlines()), "a target without its description"


_VARIABLE = r"\bselfheal_[a-z0-9_]+\b"
VARS_EXAMPLE = REPO / "docs" / "vars.example.yml"


def test_vars_example_sets_every_variable_of_the_rulebook_and_no_other() -> None:
    rulebook = (REPO / "rulebooks" / "self_healing.yml").read_text()
    used = {name for expression in re.findall(r"\{\{(.*?)\}\}", rulebook, re.S)
            for name in re.findall(_VARIABLE, expression)}
    assert {"selfheal_source_port", "selfheal_approval_secret"} <= used, "the rulebook's variables were not found"
    example = yaml.safe_load(VARS_EXAMPLE.read_text())
    assert set(example) == used, (f"missing from {VARS_EXAMPLE.name}: {sorted(used - set(example))}; "
                                  f"not read by the rulebook: {sorted(set(example) - used)}")
    # every variable is explained: a comment right above it (or above the group of variables it is in)
    lines = VARS_EXAMPLE.read_text().splitlines()
    for name in used:
        above = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:")) - 1
        while re.match(r"selfheal_[a-z0-9_]+:", lines[above]):
            above -= 1
        assert lines[above].startswith("#"), f"{name} has no comment"


def test_vars_example_lists_every_inventory_variable_the_playbooks_read() -> None:
    used: set[str] = set()
    own: set[str] = set()  # what the playbooks set themselves: facts, registered results, groups, literals
    for path in sorted([*(REPO / "playbooks").rglob("*.yml"), *(REPO / "roles").rglob("*.yml")]):
        text = path.read_text()
        used |= set(re.findall(_VARIABLE, text))
        own |= set(re.findall(r"^\s*(?:-\s+)?(selfheal_[a-z0-9_]+):", text, re.M))
        own |= set(re.findall(r"(?:register|groups):\s*(selfheal_[a-z0-9_]+)", text))
        own |= set(re.findall(r"'(selfheal_[a-z0-9_]+)'", text))
    inventory = used - own
    assert {"selfheal_store", "selfheal_target", "selfheal_health_url"} <= inventory
    text = VARS_EXAMPLE.read_text()
    section = text[text.index("# ---"):]
    assert "inventory variables" in section.splitlines()[0]
    missing = sorted(name for name in inventory if not re.search(rf"^#.*\b{name}\b", section, re.M))
    assert missing == [], f"inventory variables the playbooks read, missing from {VARS_EXAMPLE.name}: {missing}"
