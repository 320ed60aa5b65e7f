"""The local server's agents: CRUD in the official schema's shapes, calls made from an agent's
call template, and the store's limits."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.test_rest import error, ok, walk
from uvbench.server import LocalServer
from uvbench.server.agent import AgentSettings
from uvbench.server.store import MAX_AGENT_BYTES, agent_call_request

MEDIUM = {"serverWebSocket": {"inputSampleRate": 16000, "clientBufferSizeMs": 30000}}
LOOKUP = {"temporaryTool": {"modelToolName": "lookupOrder", "description": "find it", "client": {}}}
REFUND = {"temporaryTool": {"modelToolName": "refund", "description": "pay back", "client": {}}}
TEMPLATE = {
    "systemPrompt": "You are the parcel desk.",
    "voice": "Jessica",
    "temperature": 0.3,
    "medium": MEDIUM,
    "maxDuration": "120s",
    "firstSpeakerSettings": {"user": {}},
    "selectedTools": [LOOKUP, REFUND],
    "sharedSecrets": ["s3cret"],
}


async def create_agent(api: httpx.AsyncClient, name: str = "parcels", **body: Any) -> dict[str, Any]:
    return ok(await api.post("/api/agents", json={"name": name, **body}), 201, "Agent")


async def test_an_agent_is_created_read_listed_patched_and_deleted(api: httpx.AsyncClient) -> None:
    agent = await create_agent(api, callTemplate=TEMPLATE)
    agent_id = agent["agentId"]
    assert agent["name"] == "parcels" and agent["statistics"] == {"calls": 0}
    assert agent["publishedRevisionId"] is None
    template = agent["callTemplate"]
    assert template["systemPrompt"] == TEMPLATE["systemPrompt"] and template["selectedTools"] == [
        LOOKUP,
        REFUND,
    ]
    assert "sharedSecrets" not in template  # write-only
    assert template["created"] == template["updated"] == agent["created"]

    assert ok(await api.get(f"/api/agents/{agent_id}"), 200, "Agent") == agent
    listed = ok(await api.get("/api/agents"), 200, "PaginatedAgentList")
    assert [a["agentId"] for a in listed["results"]] == [agent_id] and listed["total"] == 1

    renamed = ok(await api.patch(f"/api/agents/{agent_id}", json={"name": "desk"}), 200, "Agent")
    assert renamed["name"] == "desk" and renamed["callTemplate"]["systemPrompt"] == TEMPLATE["systemPrompt"]
    assert renamed["callTemplate"]["updated"] >= renamed["callTemplate"]["created"]
    # A PATCH replaces the template as a whole; null removes it.
    replaced = ok(
        await api.patch(f"/api/agents/{agent_id}", json={"callTemplate": {"systemPrompt": "New."}}),
        200,
        "Agent",
    )
    assert set(replaced["callTemplate"]) == {"systemPrompt", "created", "updated"}
    cleared = ok(await api.patch(f"/api/agents/{agent_id}", json={"callTemplate": None}), 200, "Agent")
    assert cleared["callTemplate"] is None and cleared["name"] == "desk"
    # What was read back can be sent again: read-only keys are ignored.
    again = ok(await api.patch(f"/api/agents/{agent_id}", json=cleared), 200, "Agent")
    assert again["agentId"] == agent_id and again["created"] == agent["created"]

    assert (await api.delete(f"/api/agents/{agent_id}")).status_code == 204
    assert error(await api.get(f"/api/agents/{agent_id}"), 404) == {"detail": "Not found."}
    assert error(await api.delete(f"/api/agents/{agent_id}"), 404) == {"detail": "Not found."}
    assert error(await api.get("/api/agents/not-a-uuid"), 404) == {"detail": "Not found."}
    assert (
        error(await api.put(f"/api/agents/{agent_id}", json={}), 405)["detail"] == 'Method "PUT" not allowed.'
    )


async def test_a_call_of_an_agent_starts_from_its_call_template(
    api: httpx.AsyncClient, server: LocalServer
) -> None:
    agent = await create_agent(api, callTemplate=TEMPLATE)
    agent_id = agent["agentId"]
    call = ok(await api.post(f"/api/agents/{agent_id}/calls", json={}), 201, "Call")
    assert call["agent"] == {"agentId": agent_id, "name": "parcels"} and call["agentId"] == agent_id
    assert call["systemPrompt"] == TEMPLATE["systemPrompt"] and call["voice"] == "Jessica"
    assert call["temperature"] == pytest.approx(0.3) and call["maxDuration"] == "120s"
    assert call["medium"]["serverWebSocket"] == {
        "inputSampleRate": 16000,
        "outputSampleRate": 16000,
        "clientBufferSizeMs": 30000,
    }
    assert call["firstSpeakerSettings"] == {"user": {}} and "sharedSecrets" not in call
    tools = ok(await api.get(f"/api/calls/{call['callId']}/tools"), 200)
    assert [t["name"] for t in tools] == ["lookupOrder", "refund"]
    # The simulated agent has the template's client tools, with which it answers turns.
    record = server.store.get(call["callId"])
    assert set(AgentSettings.from_record(record, set()).tools) == {"lookupOrder", "refund"}
    counted = ok(await api.get(f"/api/agents/{agent_id}"), 200, "Agent")
    assert counted["statistics"] == {"calls": 1}


async def test_the_request_overrides_the_template_where_the_schema_allows(api: httpx.AsyncClient) -> None:
    external = {"elevenLabs": {"voiceId": "21m00Tcm4TlvDq8ikWAM"}}
    template = {**TEMPLATE, "voice": None, "externalVoice": external}
    agent_id = (await create_agent(api, callTemplate={k: v for k, v in template.items() if v is not None}))[
        "agentId"
    ]
    body = {
        "medium": {"serverWebSocket": {"inputSampleRate": 48000}},
        "maxDuration": "30s",
        "voice": "Mark",
        "toolOverrides": {"remove": ["refund"], "add": [{"toolName": "hangUp"}]},
        "metadata": {"customer": "42"},
    }
    call = ok(await api.post(f"/api/agents/{agent_id}/calls", json=body), 201, "Call")
    assert call["medium"]["serverWebSocket"] == {
        "inputSampleRate": 48000,
        "outputSampleRate": 48000,
        "clientBufferSizeMs": 60,  # the request's medium replaces the template's whole
    }
    assert call["maxDuration"] == "30s" and call["metadata"] == {"customer": "42"}
    assert call["voice"] == "Mark" and "externalVoice" not in call  # a forced voice of either kind
    assert call["systemPrompt"] == TEMPLATE["systemPrompt"]  # not overridable
    tools = ok(await api.get(f"/api/calls/{call['callId']}/tools"), 200)
    assert [t["name"] for t in tools] == ["lookupOrder", "hangUp"]
    only_added = await api.post(
        f"/api/agents/{agent_id}/calls", json={"toolOverrides": {"removeAll": True, "add": [REFUND]}}
    )
    tools = ok(await api.get(f"/api/calls/{ok(only_added, 201)['callId']}/tools"), 200)
    assert [t["name"] for t in tools] == ["refund"]


async def test_tool_overrides_that_cannot_apply_are_refused(api: httpx.AsyncClient) -> None:
    agent_id = (await create_agent(api, callTemplate=TEMPLATE))["agentId"]
    missing = await api.post(f"/api/agents/{agent_id}/calls", json={"toolOverrides": {"remove": ["refnud"]}})
    assert error(missing, 400) == {
        "toolOverrides": {
            "remove": ['"refnud" is not a tool of this agent (its tools: lookupOrder, refund).']
        }
    }
    twice = await api.post(f"/api/agents/{agent_id}/calls", json={"toolOverrides": {"add": [LOOKUP]}})
    (message,) = error(twice, 400)["toolOverrides"]["add"]["0"]
    assert '"lookupOrder" is already a tool of this call' in message


async def test_an_agent_this_server_never_stored_still_makes_calls_from_the_body(
    api: httpx.AsyncClient,
) -> None:
    agent_id = str(uuid.uuid4())
    body = {"medium": MEDIUM, "toolOverrides": {"add": [LOOKUP]}}
    call = ok(await api.post(f"/api/agents/{agent_id}/calls", json=body), 201, "Call")
    assert call["agent"] == {"agentId": agent_id, "name": "agent"} and call["systemPrompt"] is None
    tools = ok(await api.get(f"/api/calls/{call['callId']}/tools"), 200)
    assert [t["name"] for t in tools] == ["lookupOrder"]
    events = ok(await api.get(f"/api/calls/{call['callId']}/events"), 200, "PaginatedCallEventList")
    assert "agent_not_stored" in [e["type"] for e in events["results"]]
    # Without a template, the medium must come with the request.
    refused = await api.post(f"/api/agents/{agent_id}/calls", json={})
    assert "serverWebSocket" in error(refused, 400)["medium"][0]


async def test_bad_agent_bodies_get_one_error_per_field(api: httpx.AsyncClient) -> None:
    assert error(await api.post("/api/agents", json={}), 400) == {"name": ["This field is required."]}
    assert error(await api.post("/api/agents", json={"name": " "}), 400) == {
        "name": ["This field may not be blank."]
    }
    assert "64 characters" in error(await api.post("/api/agents", json={"name": "x" * 65}), 400)["name"][0]
    assert (await create_agent(api, " Desk ", callTemplate=None))["name"] == "Desk"
    assert error(await api.post("/api/agents", json={"name": 7}), 400) == {"name": ["Not a valid string."]}
    wrong = await api.post(
        "/api/agents",
        json={"name": "a", "calltemplate": {}, "callTemplate": {"temperature": 7, "sysPrompt": "x"}},
    )
    assert error(wrong, 400) == {
        "calltemplate": ["Unknown field."],
        "callTemplate": {
            "sysPrompt": ["Unknown field."],
            "temperature": ["Ensure this value is less than or equal to 1."],
        },
    }
    listed = await api.post("/api/agents", json={"name": "a", "callTemplate": []})
    assert "Expected a dictionary" in error(listed, 400)["callTemplate"]["non_field_errors"][0]
    assert error(await api.post("/api/agents", json=["x"]), 400)["non_field_errors"]
    assert ok(await api.get("/api/agents"), 200)["total"] == 1  # only the good one was stored


async def test_the_store_is_bounded_and_the_refusals_name_the_limits(
    api: httpx.AsyncClient, server: LocalServer
) -> None:
    server.store.agents.limit = 2
    for name in ("one", "two"):
        await create_agent(api, name)
    refused = error(await api.post("/api/agents", json={"name": "three"}), 400)["detail"]
    assert "at most 2 agents" in refused and "MAX_AGENTS" in refused and "DELETE /api/agents" in refused
    first = ok(await api.get("/api/agents", params={"sort": "created"}), 200)["results"][0]
    await api.delete(f"/api/agents/{first['agentId']}")
    await create_agent(api, "three")  # room again

    server.store.agents.limit = 10
    huge = await api.post(
        "/api/agents", json={"name": "big", "callTemplate": {"systemPrompt": "x" * MAX_AGENT_BYTES}}
    )
    detail = error(huge, 400)["detail"]
    assert f"at most {MAX_AGENT_BYTES} bytes" in detail and "MAX_AGENT_BYTES" in detail


async def test_agents_are_paginated_sorted_and_searched_like_calls(api: httpx.AsyncClient) -> None:
    names = ["Parcel desk", "Billing", "parcel returns", "Support"]
    for name in names:
        await create_agent(api, name)
    pages = await walk(api, "/api/agents", {"pageSize": 3})
    assert [len(p["results"]) for p in pages] == [3, 1] and all(p["total"] == 4 for p in pages)
    assert [a["name"] for p in pages for a in p["results"]] == names[::-1]  # newest first
    oldest_first = ok(await api.get("/api/agents", params={"sort": "created"}), 200, "PaginatedAgentList")
    assert [a["name"] for a in oldest_first["results"]] == names
    found = ok(await api.get("/api/agents", params={"search": "PARCEL"}), 200, "PaginatedAgentList")
    assert [a["name"] for a in found["results"]] == ["parcel returns", "Parcel desk"]
    assert list(error(await api.get("/api/agents", params={"sort": "name"}), 400)) == ["sort"]


def test_agent_call_request_merges_field_by_field_without_touching_the_template() -> None:
    template = {"name": "tpl", "contextSchema": {}, "voice": "Mark", "voiceOverrides": {"x": 1}}
    template.update(medium=MEDIUM, selectedTools=[LOOKUP])
    merged = agent_call_request(
        template, {"voice": "Jessica", "agentId": "ignored", "templateContext": {"a": 1}}
    )
    assert merged["voice"] == "Jessica" and "voiceOverrides" not in merged  # overrides were for Mark
    assert "name" not in merged and "contextSchema" not in merged and "agentId" not in merged
    assert merged["templateContext"] == {"a": 1} and merged["selectedTools"] == [LOOKUP]
    assert merged["medium"] == MEDIUM
    merged["selectedTools"].append(REFUND)
    assert template["selectedTools"] == [LOOKUP] and template["voiceOverrides"] == {"x": 1}
