"""The alertmanager source with correlation: storms become incidents, state survives restarts."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from source_harness import Client, drain, free_port, serve

from ansible_collections.selfheal.core.extensions.eda.plugins.event_source import alertmanager


@pytest.fixture
def policy(tmp_path: Path) -> dict[str, Any]:
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(yaml.safe_dump({"incident_types": [
        {"name": "database_down", "match": [{"labels": {"alertname": "PostgresDown"}}], "mode": "auto",
         "playbook": "selfheal.core.remediate_service_down"},
        {"name": "service_down", "match": [{"labels_re": {"alertname": "Service.*"}}], "mode": "auto",
         "playbook": "selfheal.core.remediate_service_down"},
    ]}))
    topology = tmp_path / "topology.yml"
    topology.write_text(yaml.safe_dump({"services": {"postgres": {}, "api": {"depends_on": ["postgres"]}}}))
    return {"correlate": True, "catalog": str(catalog), "topology": str(topology), "group_wait": 0.5,
            "update_interval": 0.2, "state_path": str(tmp_path / "store.db")}


def alert(name: str, host: str, service: str, status: str = "firing") -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": name, "host": host, "service": service},
            "startsAt": "2026-11-23T10:00:00Z", "fingerprint": f"{name}-{host}"}


async def _quiet(queue: asyncio.Queue[Any], seconds: float) -> list[Any]:
    out = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            out.append(await asyncio.wait_for(queue.get(), left))
        except TimeoutError:
            break
    return out


def test_a_storm_becomes_one_incident_and_repeats_none(policy: dict[str, Any]) -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        storm = [alert("ApiErrors", f"h{i}", "api") for i in range(200)]
        for start in range(0, 200, 20):
            assert (await post({"alerts": storm[start:start + 20]})).status == 202
        assert (await post({"alerts": [alert("PostgresDown", "db1", "postgres")]})).status == 202
        [opened] = await drain(queue, 1)
        assert opened["kind"] == "incident_opened"
        assert opened["incident"]["type"] == "database_down" and opened["signal"]["name"] == "PostgresDown"
        later = await _quiet(queue, 1.0)
        assert [e["kind"] for e in later] in ([], ["incident_updated"])
        if later:
            assert later[-1]["incident"]["signal_count"] == 201
        for start in range(0, 200, 20):  # Alertmanager re-sends the whole group
            assert (await post({"alerts": storm[start:start + 20]})).status == 202
        assert await _quiet(queue, 1.0) == []

    serve(alertmanager.main, policy, body)


def test_incidents_survive_a_restart_and_resolve_after_it(policy: dict[str, Any]) -> None:
    async def first(post: Client, queue: asyncio.Queue[Any]) -> None:
        assert (await post({"alerts": [alert("ServiceDown", "h1", "demo")]})).status == 202
        [opened] = await drain(queue, 1)
        assert opened["kind"] == "incident_opened" and opened["incident"]["type"] == "service_down"

    async def second(post: Client, queue: asyncio.Queue[Any]) -> None:
        assert (await post({"alerts": [alert("ServiceDown", "h1", "demo")]})).status == 202
        assert await _quiet(queue, 0.8) == [], "the restarted daemon knows this incident already"
        assert (await post({"alerts": [alert("ServiceDown", "h1", "demo", "resolved")]})).status == 202
        [resolved] = await drain(queue, 1)
        assert resolved["kind"] == "incident_resolved"

    serve(alertmanager.main, policy, first)
    serve(alertmanager.main, policy, second)


def test_a_broken_catalog_stops_the_source_with_file_path_and_key(tmp_path: Path, policy: dict[str, Any]) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"incident_types": [{"name": "x", "match": [{"labels": {"alertname": 5}}]}]}))
    with pytest.raises(ValueError, match=r"bad\.yml: incident_types\[0\]\.match\[0\]\.labels\.alertname: must be"):
        asyncio.run(alertmanager.main(asyncio.Queue(), {**policy, "catalog": str(bad), "port": 1}))


def test_one_long_annotation_refuses_nothing_and_all_50_alerts_correlate(policy: dict[str, Any]) -> None:
    trace = "Traceback (most recent call last): ...\n" * 520  # about 20 KB
    root = {**alert("PostgresDown", "db1", "postgres"), "annotations": {"trace": trace}}
    alerts = [alert("ApiErrors", f"h{i}", "api") for i in range(49)] + [root]

    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        assert (await post({"alerts": alerts})).status == 202
        [opened] = await drain(queue, 1)
        assert opened["incident"]["type"] == "database_down"
        later = await _quiet(queue, 0.8)
        counts = [e["incident"]["signal_count"] for e in [opened, *later]]
        assert max(counts) == 50, counts
        kept = opened["signal"]["annotations"]["trace"]
        assert len(kept) == 4096 and kept.endswith(f"[truncated by selfheal: {len(trace)} characters]")

    serve(alertmanager.main, policy, body)


def test_what_was_accepted_is_kept_across_a_stop_while_the_rulebook_does_not_read(policy: dict[str, Any]) -> None:
    storm = [alert("ApiErrors", f"h{i}", "api") for i in range(300)] + [alert("PostgresDown", "db1", "postgres")]

    async def first(post: Client, queue: asyncio.Queue[Any]) -> None:
        for start in range(0, len(storm), 50):
            assert (await post({"alerts": storm[start:start + 50]})).status == 202
        await asyncio.sleep(0.3)  # the rulebook never reads: the incident waits in the outbox

    async def second(post: Client, queue: asyncio.Queue[Any]) -> None:
        [opened] = await drain(queue, 1)
        assert opened["kind"] == "incident_opened" and opened["incident"]["type"] == "database_down"
        for start in range(0, len(storm), 50):  # every signal was kept: the resolved tail closes it
            resolved = [{**a, "status": "resolved"} for a in storm[start:start + 50]]
            assert (await post({"alerts": resolved})).status == 202
        events = [await asyncio.wait_for(queue.get(), 5)]
        events += await _quiet(queue, 1.0)
        assert events[-1]["kind"] == "incident_resolved", [e["kind"] for e in events]
        assert events[-1]["incident"]["signal_count"] == len(storm)

    serve(alertmanager.main, policy, first, queue_size=1)
    serve(alertmanager.main, policy, second)


def test_alerts_left_in_the_intake_by_a_crash_are_correlated_at_start(policy: dict[str, Any]) -> None:
    # A daemon killed after answering 202 and before correlating leaves its alerts in the intake only.
    from ansible_collections.selfheal.core.extensions.eda.plugins.event_source._ingest import Intake, intake_path
    from ansible_collections.selfheal.core.plugins.module_utils.signals import from_alertmanager

    path = intake_path({"intake_path": None, "state_path": policy["state_path"]}, alertmanager.PLUGIN)
    intake = Intake(path)
    for host in ("h1", "h2"):
        signal = from_alertmanager(alert("ServiceDown", host, "demo"), 1.0)
        intake.append([{"alert": {}, "signal": signal.to_dict(), "meta": {}}], 1.0)
    intake.close()

    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        opened = await drain(queue, 2)
        assert sorted(e["incident"]["root"]["host"] for e in opened) == ["h1", "h2"]

    serve(alertmanager.main, policy, body)
    assert Intake(path).rows == 0, "what the saved state holds is deleted from the intake"


@pytest.mark.parametrize("primary_down", [False, True], ids=["primary", "fallback"])
def test_the_watchdog_pages_what_no_automation_handles_straight_from_the_source(policy: dict[str, Any],
                                                                                tmp_path: Path,
                                                                                primary_down: bool) -> None:
    """Straight to notify_url; when it does not answer, retried and then sent to notify_fallback_url."""
    from aiohttp import web

    from ansible_collections.selfheal.core.plugins.module_utils.store import Store

    catalog = yaml.safe_load(Path(policy["catalog"]).read_text())
    catalog["incident_types"].append({"name": "disk_noise", "match": [{"labels": {"alertname": "DiskNoise"}}],
                                      "mode": "observe"})
    Path(policy["catalog"]).write_text(yaml.safe_dump(catalog))
    pages: list[dict[str, Any]] = []
    where: dict[str, str] = {}

    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        assert (await post({"alerts": [alert("DiskNoise", "h7", "disk")]})).status == 202
        events = [await asyncio.wait_for(queue.get(), 5) for attempt in range(2)]
        assert [e["kind"] for e in events] == ["incident_opened", "incident_escalated"]
        assert "no automatic remediation" in events[1]["why"]
        for _attempt in range(300):
            if pages:
                break
            await asyncio.sleep(0.1)
        assert await _quiet(queue, 1.0) == [], "paged once"

    async def receiver(request: web.Request) -> web.Response:
        pages.append(await request.json())
        return web.json_response({}, status=202)

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/pages", receiver)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        here = f"http://127.0.0.1:{port}/pages"
        where["receiver"] = f"127.0.0.1:{port}"
        if primary_down:
            policy["notify_url"], policy["notify_fallback_url"] = f"http://127.0.0.1:{free_port()}/pages", here
        else:
            policy["notify_url"] = here
        policy["watchdog_interval"] = 0.2
        try:
            await asyncio.to_thread(serve, alertmanager.main, policy, body)
        finally:
            await runner.cleanup()

    asyncio.run(run())
    assert len(pages) == 1 and "disk_noise on h7 needs a human" in pages[0]["summary"]
    store = Store(policy["state_path"])
    try:
        trail = store.audit_trail()
        watched = alertmanager.saved_state(store)
    finally:
        store.close()
    assert [e["event"] for e in trail] == ["escalated"] and trail[0]["actor"] == "watchdog"
    assert trail[0]["details"]["receiver"] == where["receiver"], "the receiver that took it, fallback or not"
    assert [w["paged"] and w["delivered"] for w in watched["watchdog"]] == [True]


def test_an_intake_made_anew_beside_an_older_state_loses_nothing(policy: dict[str, Any]) -> None:
    from ansible_collections.selfheal.core.extensions.eda.plugins.event_source._ingest import intake_path

    async def first(post: Client, queue: asyncio.Queue[Any]) -> None:
        for host in ("h1", "h2", "h3"):
            assert (await post({"alerts": [alert("ServiceDown", host, "demo")]})).status == 202
        assert len(await drain(queue, 3)) == 3

    serve(alertmanager.main, policy, first)
    path = intake_path({"intake_path": None, "state_path": policy["state_path"]}, alertmanager.PLUGIN)
    assert path is not None
    Path(path).unlink()  # the saved state says 3 rows were consumed; a new intake must not reuse ids 1-3

    async def second(post: Client, queue: asyncio.Queue[Any]) -> None:
        assert (await post({"alerts": [alert("ServiceDown", "h9", "demo")]})).status == 202
        [opened] = await drain(queue, 1)
        assert opened["incident"]["root"]["host"] == "h9"

    serve(alertmanager.main, policy, second)
