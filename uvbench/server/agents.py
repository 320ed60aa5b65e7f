"""The agents of the local server: `POST`/`GET /api/agents`, `GET`/`PATCH`/`DELETE
/api/agents/{agent_id}`, in the shapes of the official schema (`Agent`, `PatchedAgent`,
`PaginatedAgentList`). Calls of an agent (`POST /api/agents/{agent_id}/calls`, in rest.py) start
from its call template (`store.agent_call_request`).

Choices where the spec is silent, all local-server behaviour:
- `name` is required on create ("creates a new agent using the specified name and call template",
  the API reference says; the schema marks nothing required), trimmed and not blank as DRF's
  CharField does, at most 64 characters as the schema says.
- The read-only keys of `Agent` (agentId, publishedRevisionId, created, statistics) in a body are
  ignored, as DRF does, so an agent read back can be sent again; any other unknown key is an
  error, as everywhere on this server, so a misspelled field is never silently lost.
- `PATCH` replaces each field it gives as a whole: a `callTemplate` replaces the whole template
  (`null` removes it).
- The store holds at most `MAX_AGENTS` agents of at most `MAX_AGENT_BYTES` each; past either the
  request is refused with 400 naming the limit. `publishedRevisionId` is always null (no revisions
  here); `statistics.calls` counts the agent's calls this server holds.
- `GET /api/agents` pages like `/api/calls`: sorted `-created` by default (`sort` takes
  `created` or `-created`); `search` matches names, ignoring case.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from uvbench.protocol.schema import RequestValidationError, validate_start_call
from uvbench.server.rest import (
    ApiError,
    _check_spoken_texts,
    _is_uuid,
    _json_object,
    _parse_json,
    _query_nonblank,
    _query_sort,
    _state,
    not_found,
    paginated,
)
from uvbench.server.store import MAX_AGENT_BYTES, AgentRecord

CALL_TEMPLATE = "ultravox.v1.CallTemplate"
MAX_NAME_LENGTH = 64
READ_ONLY_FIELDS = ("agentId", "publishedRevisionId", "created", "statistics")
SERVER_SET_TEMPLATE_FIELDS = ("created", "updated")
"""Keys of a call template the server sets; given in a body, they are ignored."""


async def _read_agent_body(request: web.Request, *, partial: bool) -> dict[str, Any]:
    """The body's writable fields, validated: `name` and/or `callTemplate` (normalized)."""
    raw = await request.read()
    if len(raw) > MAX_AGENT_BYTES:
        raise ApiError.detail(
            400,
            f"This agent is {len(raw)} bytes; this server keeps agents of at most {MAX_AGENT_BYTES} "
            "bytes (its limit, MAX_AGENT_BYTES): shorten the system prompt or tools.",
        )
    body = _json_object(_parse_json(raw))
    errors: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for key in body:
        if key not in ("name", "callTemplate", *READ_ONLY_FIELDS):
            errors[key] = ["Unknown field."]
    if "name" in body:
        name = body["name"]
        if name is None:
            errors["name"] = ["This field may not be null."]
        elif not isinstance(name, str):
            errors["name"] = ["Not a valid string."]
        elif not name.strip():  # DRF's CharField trims surrounding whitespace first
            errors["name"] = ["This field may not be blank."]
        elif len(name.strip()) > MAX_NAME_LENGTH:
            errors["name"] = [f"Ensure this field has no more than {MAX_NAME_LENGTH} characters."]
        else:
            fields["name"] = name.strip()
    elif not partial:
        errors["name"] = ["This field is required."]
    if "callTemplate" in body:
        template = body["callTemplate"]
        if template is None:
            fields["callTemplate"] = None
        else:
            try:
                normalized = validate_start_call(template, schema_name=CALL_TEMPLATE)
            except RequestValidationError as exc:
                errors["callTemplate"] = exc.errors
            else:
                try:  # refused when stored, not at each call made from it
                    _check_spoken_texts(normalized)
                except ApiError as exc:
                    errors["callTemplate"] = exc.body
                else:
                    fields["callTemplate"] = {
                        k: v for k, v in normalized.items() if k not in SERVER_SET_TEMPLATE_FIELDS
                    }
    if errors:
        raise ApiError(400, errors)
    return fields


def _agent(request: web.Request) -> AgentRecord:
    """The agent named in the path; 404 for a malformed, unknown or deleted id."""
    agent_id = request.match_info["agent_id"]
    agent = _state(request).store.agents.get(agent_id) if _is_uuid(agent_id) else None
    if agent is None:
        raise not_found()
    return agent


def _render(request: web.Request, agent: AgentRecord) -> dict[str, Any]:
    return agent.to_api(calls=_state(request).store.calls_per_agent()[agent.agent_id])


async def create_agent(request: web.Request) -> web.Response:
    store = _state(request).store
    fields = await _read_agent_body(request, partial=False)
    if store.agents.full:
        raise ApiError.detail(
            400,
            f"This server keeps at most {store.agents.limit} agents (its limit, MAX_AGENTS): delete "
            "one (DELETE /api/agents/{agent_id}) before creating another.",
        )
    now = store.clock.now_ns()
    created = store.clock.wall(now)
    agent = AgentRecord(
        agent_id=str(uuid.uuid4()),
        name=fields["name"],
        call_template=fields.get("callTemplate"),
        created=created,
        updated=created,
        created_ns=now,
    )
    store.agents.add(agent)
    return web.json_response(agent.to_api(calls=0), status=201)


async def list_agents(request: web.Request) -> web.Response:
    store = _state(request).store
    sort = _query_sort(request, ("created", "-created"), "-created")
    search = _query_nonblank(request, "search")
    agents = list(store.agents.agents.values())
    if search is not None:
        needle = search.casefold()
        agents = [a for a in agents if needle in a.name.casefold()]
    calls = store.calls_per_agent()
    sign = -1 if sort.startswith("-") else 1
    return paginated(
        request,
        agents,
        key=lambda a: (sign * a.created_ns, a.agent_id),
        render=lambda a: a.to_api(calls=calls[a.agent_id]),
    )


async def get_agent(request: web.Request) -> web.Response:
    return web.json_response(_render(request, _agent(request)))


async def patch_agent(request: web.Request) -> web.Response:
    agent = _agent(request)
    fields = await _read_agent_body(request, partial=True)
    if "name" in fields:
        agent.name = fields["name"]
    if "callTemplate" in fields:
        agent.call_template = fields["callTemplate"]
    clock = _state(request).store.clock
    agent.updated = clock.wall(clock.now_ns())
    return web.json_response(_render(request, agent))


async def delete_agent(request: web.Request) -> web.Response:
    agent = _agent(request)
    _state(request).store.agents.delete(agent.agent_id)
    return web.Response(status=204)


def setup_routes(app: web.Application) -> None:
    """After rest.setup_routes, whose middlewares (errors, auth, delay) serve these routes too."""
    app.add_routes(
        [
            web.post("/api/agents", create_agent),
            web.get("/api/agents", list_agents),
            web.get("/api/agents/{agent_id}", get_agent),
            web.patch("/api/agents/{agent_id}", patch_agent),
            web.delete("/api/agents/{agent_id}", delete_agent),
        ]
    )
