# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog (which incident type a signal is) and the topology (what depends on what).

Both are YAML files written by people, so every error names the file, the
path inside it and the key at fault, e.g.
``catalog.yml: incident_types[2].match[0].labels.alertname: must be a string``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.policy import MODES, Policy, Window
from ansible_collections.selfheal.core.plugins.module_utils.signals import Signal, SignalError, parse_time
from ansible_collections.selfheal.core.plugins.module_utils.slo import SloError, SloSpec
from ansible_collections.selfheal.core.plugins.module_utils.watchdog import DEFAULT_DEADLINE

yaml: Any
try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None

DEFAULT_HOLD = 30.0
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class PolicyFileError(ValueError):
    """A catalog or topology file that cannot be used; the message names file, path and key."""


def _fail(source: str, path: str, message: str) -> PolicyFileError:
    return PolicyFileError(f"{source}: {path}: {message}" if path else f"{source}: {message}")


def load_yaml(path: str) -> Any:
    if yaml is None:  # pragma: no cover
        raise PolicyFileError(f"{path}: PyYAML is required to read it")
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise PolicyFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{path}: not valid YAML: {exc}") from None


def _mapping(value: Any, source: str, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(source, path, f"must be a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise _fail(source, path, f"keys must be strings, got {key!r}")
    return value


def _unknown(value: Mapping[str, Any], allowed: set[str], source: str, path: str) -> None:
    extra = sorted(set(value) - allowed)
    if extra:
        where = f"{path}.{extra[0]}" if path else extra[0]
        raise _fail(source, where, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _string_map(value: Any, source: str, path: str) -> dict[str, str]:
    out = {}
    for key, val in _mapping(value, source, path).items():
        if not isinstance(val, str):
            raise _fail(source, f"{path}.{key}", f"must be a string, got {type(val).__name__}")
        out[key] = val
    return out


# --------------------------------------------------------------------------- catalog

@dataclass(frozen=True)
class Matcher:
    """One match rule: every listed label equals (or fully matches) its value."""

    labels: dict[str, str] = field(default_factory=dict)
    labels_re: dict[str, re.Pattern[str]] = field(default_factory=dict)
    source: str | None = None

    def matches(self, signal: Signal) -> bool:
        if self.source is not None and signal.source != self.source:
            return False
        if any(signal.labels.get(key) != want for key, want in self.labels.items()):
            return False
        return all(pattern.fullmatch(signal.labels.get(key, "")) is not None
                   for key, pattern in self.labels_re.items())


@dataclass(frozen=True)
class IncidentType:
    name: str
    match: tuple[Matcher, ...]
    playbook: str | None = None
    mode: str = "observe"
    description: str = ""
    never_automate: bool = False
    policy: Policy = field(default_factory=Policy)
    verify_timeout: float = 30.0
    escalation_route: str = "default"
    approval_timeout: float = 900.0
    slo: SloSpec | None = None
    verify_query: str | None = None
    # seconds an incident may wait for a run to finish before the watchdog resumes it, or pages a human
    deadline: float = DEFAULT_DEADLINE
    # seconds a verified fix stays under watch (probed) before it counts as holding
    hold: float = DEFAULT_HOLD
    # a healed incident sends an informational notice after the fact (not a page)
    notice: bool = False
    # the role that fixes it (entry points diagnose, remediate, verify, rollback), run by the lifecycle
    role: str | None = None
    # settings the catalog gives the type's role (selfheal_request.parameters), e.g. a disk threshold
    parameters: Mapping[str, Any] = field(default_factory=dict)
    # target: one incident per target; group: one per service of a fleet (the alerts of its hosts that
    # arrive within the group wait, the guard batching them), such as a memory leak on many hosts
    scope: str = "target"


@dataclass(frozen=True)
class Catalog:
    types: tuple[IncidentType, ...]
    source: str = "<catalog>"
    windows: tuple[Window, ...] = ()

    def classify(self, signal: Signal) -> IncidentType | None:
        """The first incident type whose match rules take the signal, in file order."""
        for itype in self.types:
            if any(m.matches(signal) for m in itype.match):
                return itype
        return None

    def get(self, name: str) -> IncidentType | None:
        return next((t for t in self.types if t.name == name), None)


LIFECYCLE_PLAYBOOK = "selfheal.core.remediate"
_ROLE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
_TYPE_KEYS = {"name", "match", "playbook", "role", "steps", "ladder", "mode", "description", "never_automate",
              "blast_radius", "cooldown", "circuit", "verification", "escalation", "slo", "approval", "promotion",
              "parameters", "scope"}


def parse_catalog(data: Any, source: str = "<catalog>") -> Catalog:
    root = _mapping(data, source, "")
    _unknown(root, {"version", "incident_types", "windows"}, source, "")
    if root.get("version", 1) != 1:
        raise _fail(source, "version", f"unsupported version {root.get('version')!r}; this release reads 1")
    entries = root.get("incident_types")
    if not isinstance(entries, list) or not entries:
        raise _fail(source, "incident_types", "must be a non-empty list of incident types")
    types: list[IncidentType] = []
    for i, entry in enumerate(entries):
        path = f"incident_types[{i}]"
        item = _mapping(entry, source, path)
        _unknown(item, _TYPE_KEYS, source, path)
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail(source, f"{path}.name", "must be a lower-case identifier (a-z, 0-9, _), e.g. service_down")
        if any(t.name == name for t in types):
            raise _fail(source, f"{path}.name", f"duplicate incident type {name!r}")
        mode = item.get("mode", "observe")
        if mode not in MODES:
            raise _fail(source, f"{path}.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        role = item.get("role")
        if role is not None and (not isinstance(role, str) or not _ROLE.match(role)):
            raise _fail(source, f"{path}.role", "must be a role's full name, e.g. selfheal.core.service")
        playbook = item.get("playbook", LIFECYCLE_PLAYBOOK if role is not None else None)
        if playbook is not None and (not isinstance(playbook, str) or not playbook):
            raise _fail(source, f"{path}.playbook",
                        f"must be a playbook name, e.g. {LIFECYCLE_PLAYBOOK} (the lifecycle, with role)")
        if playbook == LIFECYCLE_PLAYBOOK and role is None:
            raise _fail(source, f"{path}.role", f"{LIFECYCLE_PLAYBOOK} needs the role that fixes the type")
        never = item.get("never_automate", False)
        if not isinstance(never, bool):
            raise _fail(source, f"{path}.never_automate", "must be true or false")
        if mode != "observe" and playbook is None:
            raise _fail(source, f"{path}.playbook", f"mode {mode} needs a playbook to run")
        description = item.get("description", "")
        if not isinstance(description, str):
            raise _fail(source, f"{path}.description", "must be a string")
        rules = item.get("match")
        if not isinstance(rules, list) or not rules:
            raise _fail(source, f"{path}.match", "must be a non-empty list of match rules")
        matchers = tuple(_parse_matcher(rule, source, f"{path}.match[{j}]") for j, rule in enumerate(rules))
        policy = Policy(
            mode=mode, never_automate=never,
            blast_percent=_number(item, "blast_radius", "percent", 10.0, source, path, 0.1, 100),
            blast_max=_optional_int(item, "blast_radius", "max", source, path),
            cooldown=_number(item, None, "cooldown", 300.0, source, path, 0, 86400 * 30),
            circuit_failures=int(_number(item, "circuit", "failures", 3, source, path, 1, 1000)),
            circuit_target_failures=int(_number(item, "circuit", "target_failures", 2, source, path, 1, 1000)),
            circuit_window=_number(item, "circuit", "window", 600.0, source, path, 1, 86400 * 30),
            circuit_reset=_number(item, "circuit", "reset", 1800.0, source, path, 1, 86400 * 30),
            burn_fast=_number(item, "slo", "fast_burn", 14.4, source, path, 1, 10000),
            burn_slow=_number(item, "slo", "slow_burn", 6.0, source, path, 1, 10000),
            promote_after=int(_number(item, "promotion", "after", 5, source, path, 1, 1000)),
            self_promote=_flag(item, "promotion", "automatic", source, path),
            steps=_steps(item, source, path),
            skip_after=int(_number(item, "ladder", "skip_after", 3, source, path, 1, 1000)),
            ladder_window=_number(item, "ladder", "window", 7 * 86400.0, source, path, 60, 366 * 86400),
            cumulative=_flag(item, "ladder", "cumulative", source, path),
        )
        if policy.self_promote and mode != "propose":
            raise _fail(source, f"{path}.promotion.automatic", "only a propose type can promote itself to auto")
        approval_timeout = _number(item, "approval", "timeout", 900.0, source, path, 1, 7 * 86400)
        slo = _parse_slo(item, source, path)
        verify_query = _section(item, "verification", source, path).get("promql")
        if verify_query is not None and (not isinstance(verify_query, str) or not verify_query.strip()):
            raise _fail(source, f"{path}.verification.promql",
                        'must be a PromQL condition that holds when healthy, e.g. up{host="{target}"} == 1')
        verify_timeout = _number(item, "verification", "timeout", 30.0, source, path, 1, 3600)
        route = _section(item, "escalation", source, path).get("route", "default")
        if not isinstance(route, str) or not route:
            raise _fail(source, f"{path}.escalation.route", "must be a route name")
        deadline = _number(item, "escalation", "deadline", DEFAULT_DEADLINE, source, path, 10, 86400)
        hold = _number(item, "verification", "hold", DEFAULT_HOLD, source, path, 0, 86400)
        notice = _flag(item, "escalation", "notify_resolved", source, path)
        parameters = item.get("parameters", {})
        if not isinstance(parameters, dict) or not all(isinstance(k, str) and _NAME.match(k) for k in parameters):
            raise _fail(source, f"{path}.parameters",
                        "must be a mapping of lower-case names to values, given to the type's role")
        if parameters and role is None:
            raise _fail(source, f"{path}.parameters", "needs a role to give them to")
        scope = item.get("scope", "target")
        if scope not in ("target", "group"):
            raise _fail(source, f"{path}.scope", f"must be target or group, got {scope!r}")
        types.append(IncidentType(name, matchers, playbook, mode, description, never, policy, verify_timeout, route,
                                  approval_timeout, slo, verify_query, deadline, hold, notice, role,
                                  dict(parameters), scope))
    windows = tuple(_parse_window(w, source, f"windows[{k}]") for k, w in enumerate(root.get("windows") or []))
    return Catalog(tuple(types), source, windows)


_SECTION_KEYS = {
    "blast_radius": {"percent", "max"},
    "circuit": {"failures", "target_failures", "window", "reset"},
    "verification": {"timeout", "promql", "hold"},
    "escalation": {"route", "deadline", "notify_resolved"},
    "approval": {"timeout"},
    "ladder": {"skip_after", "window", "cumulative"},
    "promotion": {"after", "automatic"},
    "slo": {"fast_burn", "slow_burn", "error_ratio_query", "objective", "fast_windows", "slow_windows"},
}


def _section(item: Mapping[str, Any], name: str, source: str, path: str) -> Mapping[str, Any]:
    value = _mapping(item.get(name) or {}, source, f"{path}.{name}")
    _unknown(value, _SECTION_KEYS[name], source, f"{path}.{name}")
    return value


def _number(item: Mapping[str, Any], section: str | None, key: str, default: float, source: str, path: str,
            low: float, high: float) -> float:
    holder = _section(item, section, source, path) if section else item
    where = f"{path}.{section}.{key}" if section else f"{path}.{key}"
    value = holder.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _fail(source, where, f"must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _parse_slo(item: Mapping[str, Any], source: str, path: str) -> SloSpec | None:
    """The SLO whose error-budget burn the guard queries, when the entry gives its error ratio query."""
    section = _section(item, "slo", source, path)
    if "error_ratio_query" not in section:
        extra = sorted(set(section) & {"objective", "fast_windows", "slow_windows"})
        if extra:
            raise _fail(source, f"{path}.slo.{extra[0]}", "needs slo.error_ratio_query (the PromQL error ratio)")
        return None
    if "objective" not in section:
        raise _fail(source, f"{path}.slo.objective", "is required with error_ratio_query, e.g. 0.999")
    good = {"objective": 0.99, "error_ratio_query": "e[{window}]"}  # known good, to find the key at fault
    for key in ("objective", "error_ratio_query", "fast_windows", "slow_windows"):
        if key in section:
            try:
                SloSpec(**{**good, key: section[key]})
            except SloError as exc:
                raise _fail(source, f"{path}.slo.{key}", str(exc)) from None
    return SloSpec(**{key: section[key] for key in ("objective", "error_ratio_query", "fast_windows", "slow_windows")
                      if key in section})


def _steps(item: Mapping[str, Any], source: str, path: str) -> tuple[str, ...]:
    """The type's ladder: step names, least disruptive first (its role's remediate entry point gets each)."""
    steps = item.get("steps", ["remediate"])
    if not isinstance(steps, list) or not steps:
        raise _fail(source, f"{path}.steps", "must be a non-empty list of step names, least disruptive first")
    for j, step in enumerate(steps):
        if not isinstance(step, str) or not _NAME.match(step):
            raise _fail(source, f"{path}.steps[{j}]", "must be a lower-case step name, e.g. restart")
    if len(set(steps)) != len(steps):
        raise _fail(source, f"{path}.steps", "names a step twice")
    return tuple(steps)


def _flag(item: Mapping[str, Any], section: str, key: str, source: str, path: str) -> bool:
    value = _section(item, section, source, path).get(key, False)
    if not isinstance(value, bool):
        raise _fail(source, f"{path}.{section}.{key}", f"must be true or false, got {value!r}")
    return value


def _optional_int(item: Mapping[str, Any], section: str, key: str, source: str, path: str) -> int | None:
    value = _section(item, section, source, path).get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(source, f"{path}.{section}.{key}", f"must be a whole number of at least 1, got {value!r}")
    return value


def _parse_window(data: Any, source: str, path: str) -> Window:
    item = _mapping(data, source, path)
    _unknown(item, {"name", "kind", "start", "end", "targets"}, source, path)
    kind = item.get("kind", "maintenance")
    if kind not in ("maintenance", "freeze"):
        raise _fail(source, f"{path}.kind", "must be maintenance or freeze")
    times = []
    for key in ("start", "end"):
        try:
            value = parse_time(item.get(key))
        except SignalError as exc:
            raise _fail(source, f"{path}.{key}", str(exc)) from None
        if value is None:
            raise _fail(source, f"{path}.{key}", "is required (RFC 3339 time, e.g. 2026-12-24T00:00:00Z)")
        times.append(value)
    if times[1] <= times[0]:
        raise _fail(source, f"{path}.end", "must be after start")
    targets = item.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
        raise _fail(source, f"{path}.targets", "must be a list of target names (empty: everything)")
    name = item.get("name", kind)
    if not isinstance(name, str):
        raise _fail(source, f"{path}.name", "must be a string")
    return Window(times[0], times[1], tuple(targets), name, kind)


def _parse_matcher(rule: Any, source: str, path: str) -> Matcher:
    item = _mapping(rule, source, path)
    _unknown(item, {"labels", "labels_re", "source"}, source, path)
    if not item:
        raise _fail(source, path, "an empty match rule would match every signal; name at least one label")
    labels = _string_map(item.get("labels", {}), source, f"{path}.labels")
    patterns = {}
    for key, text in _string_map(item.get("labels_re", {}), source, f"{path}.labels_re").items():
        try:
            patterns[key] = re.compile(text)
        except re.error as exc:
            raise _fail(source, f"{path}.labels_re.{key}", f"not a valid regular expression: {exc}") from None
    src = item.get("source")
    if src is not None and not isinstance(src, str):
        raise _fail(source, f"{path}.source", "must be a string")
    return Matcher(labels, patterns, src)


def load_catalog(path: str) -> Catalog:
    return parse_catalog(load_yaml(path), path)


ROLE_ENTRY_POINTS = ("diagnose", "remediate", "verify", "rollback")


def check_roles(catalog: Catalog, collection_roots: list[str]) -> None:
    """Every role the catalog names is installed with the lifecycle's entry points: found under one of
    `collection_roots` (directories that hold ansible_collections/), or a PolicyFileError naming the file,
    the entry and what is missing. Run at daemon start, so a typo fails there, not at the first incident."""
    for i, itype in enumerate(catalog.types):
        if itype.role is None:
            continue
        namespace, name, role = itype.role.split(".")
        dirs = [os.path.join(root, "ansible_collections", namespace, name, "roles", role) for root in collection_roots]
        found = next((d for d in dirs if os.path.isdir(d)), None)
        if found is None:
            raise _fail(catalog.source, f"incident_types[{i}].role",
                        f"role {itype.role} is not installed (looked in {', '.join(collection_roots) or 'nowhere'})")
        missing = [e for e in ROLE_ENTRY_POINTS if not os.path.isfile(os.path.join(found, "tasks", f"{e}.yml"))]
        if missing:
            raise _fail(catalog.source, f"incident_types[{i}].role",
                        f"role {itype.role} has no {', '.join(missing)} entry point (tasks/<entry>.yml in {found}); "
                        f"the lifecycle runs {', '.join(ROLE_ENTRY_POINTS)}")
        known = role_steps(found)
        for j, step in enumerate(itype.policy.steps):
            if step not in known:
                raise _fail(catalog.source, f"incident_types[{i}].steps[{j}]",
                            f"role {itype.role} has no step {step!r} (its remediate entry point takes "
                            f"{', '.join(known) or 'no selfheal_step'}: meta/argument_specs.yml in {found})")


def role_steps(role_dir: str) -> tuple[str, ...]:
    """The steps a type's role takes: the choices of its remediate entry point's selfheal_step option in
    meta/argument_specs.yml (a role without that option takes the default step, remediate). A spec file that
    cannot be read is a PolicyFileError naming it."""
    spec_path = os.path.join(role_dir, "meta", "argument_specs.yml")
    specs = load_yaml(spec_path) if os.path.isfile(spec_path) else {}
    remediate = ((specs or {}).get("argument_specs") or {}).get("remediate") or {}
    choices = ((remediate.get("options") or {}).get("selfheal_step") or {}).get("choices")
    return tuple(str(c) for c in choices or ("remediate",))


# --------------------------------------------------------------------------- topology

@dataclass(frozen=True)
class Topology:
    """Which services depend on which, and which services run on which hosts."""

    depends_on: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "<topology>"

    def upstream(self, service: str | None) -> tuple[str, ...]:
        """Every service `service` depends on, nearest first (breadth first)."""
        if not service:
            return ()
        seen: list[str] = []
        frontier = list(self.depends_on.get(service, ()))
        while frontier:
            nxt = frontier.pop(0)
            if nxt not in seen:
                seen.append(nxt)
                frontier.extend(self.depends_on.get(nxt, ()))
        return tuple(seen)

    def top(self, service: str | None) -> str | None:
        """The farthest upstream service (the likeliest root of a cascade), or None."""
        chain = self.upstream(service)
        return chain[-1] if chain else None


def parse_topology(data: Any, source: str = "<topology>") -> Topology:
    root = _mapping(data, source, "")
    _unknown(root, {"version", "services"}, source, "")
    services = _mapping(root.get("services", {}), source, "services")
    depends: dict[str, tuple[str, ...]] = {}
    hosts: dict[str, tuple[str, ...]] = {}
    for name, spec in services.items():
        path = f"services.{name}"
        item = _mapping(spec if spec is not None else {}, source, path)
        _unknown(item, {"depends_on", "hosts", "description"}, source, path)
        for key in ("depends_on", "hosts"):
            value = item.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise _fail(source, f"{path}.{key}", "must be a list of names")
        depends[name] = tuple(item.get("depends_on", []))
        hosts[name] = tuple(item.get("hosts", []))
    for name, deps in depends.items():
        for j, dep in enumerate(deps):
            if dep not in depends:
                raise _fail(source, f"services.{name}.depends_on[{j}]", f"unknown service {dep!r}")
    topo = Topology(depends, hosts, source)
    for name in depends:
        if name in topo.upstream(name):
            raise _fail(source, f"services.{name}.depends_on", f"dependency cycle through {name!r}")
    return topo


def load_topology(path: str) -> Topology:
    return parse_topology(load_yaml(path), path)
