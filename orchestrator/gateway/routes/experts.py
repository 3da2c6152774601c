"""What can answer: `/v1/models` (routers and experts, OpenAI's model list, for every caller) and
`/v1/experts` (list, add, delete: admin keys only, as they reveal and change the server's state).

Experts added over the API are confined (README, "Security model"): `openai` only, `base_url` on
the allow-list, credentials by a secret's name; the config file's experts cannot be deleted or
shadowed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from experts.errors import ConfigError
from experts.spec import ExpertSpec, format_validation_error
from orchestrator.gateway import errors as E
from orchestrator.gateway.deps import AdminDep, CallerDep, GatewayState, State
from orchestrator.protocol import ExpertCreate, ModelCard, ModelList
from routers.registry import router_names

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
async def list_models(st: State, _: CallerDep) -> ModelList:
    cards = [ModelCard(id=r, kind="router", created=int(st.started)) for r in router_names()]
    cards += [ModelCard(id=n, kind="expert", created=int(st.started)) for n in st.runtime.registry.names]
    return ModelList(data=cards)


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, st: State, _: CallerDep) -> ModelCard:
    if model_id in router_names():
        return ModelCard(id=model_id, kind="router", created=int(st.started))
    if st.runtime.registry.find(model_id):
        return ModelCard(id=st.runtime.registry.resolve(model_id), kind="expert", created=int(st.started))
    raise E.NotFound(f"unknown model {model_id!r}", param="model", code="model_not_found")


@router.get("/v1/experts")
async def list_experts(st: State, _: AdminDep) -> dict[str, Any]:
    health = {h.name: h for h in await st.expert_health()}
    data = []
    for spec in st.runtime.registry.specs():
        h = health.get(spec.name)
        circuit = st.runtime.dispatcher.breaker(spec.name).snapshot()
        healthy = h.healthy if h else None
        if circuit["state"] == "open":
            healthy = False  # calls fail fast right now, whatever the last probe said
        data.append({**spec.model_dump(mode="json"), "healthy": healthy, "health_detail": h.detail if h else "", "circuit": circuit})
    return {"object": "list", "data": data}


def confined_spec(body: ExpertCreate, st: GatewayState) -> ExpertSpec:
    """The spec an API caller may register, or the error that says why not."""
    allowed = st.settings.expert_hosts()
    if not allowed:
        raise E.Forbidden("registering experts over the API is off on this server (ORCHESTRATOR_API_EXPERT_HOSTS is empty); "
                          "add them to its configuration file", code="api_experts_disabled")
    for n in (body.name, *body.aliases):
        if n.strip().lower() in st.config_names:
            raise E.Forbidden(f"{n!r} is an expert of the server's configuration file; it cannot be replaced over the API",
                              param="name" if n == body.name else "aliases", code="config_expert")
        if n in router_names():
            raise E.BadRequest(f"{n!r} is a router's name", param="name" if n == body.name else "aliases")
    try:
        spec = body.to_spec()
    except ValidationError as e:
        first = e.errors()[0]
        raise E.BadRequest(format_validation_error(e, "expert").split("\n")[0],
                           param=".".join(str(p) for p in first["loc"]) or None) from None
    if not allowed.allows(spec.base_url or ""):
        raise E.BadRequest("base_url: this host is not on the server's allow-list for experts (ORCHESTRATOR_API_EXPERT_HOSTS)",
                           param="base_url", code="base_url_not_allowed")
    if spec.api_key_secret is not None and spec.api_key_secret not in st.config.secrets:
        raise E.BadRequest(f"api_key_secret: {spec.api_key_secret!r} is not a secret this server maps (secrets: in its configuration)",
                           param="api_key_secret", code="unknown_secret")
    return spec


@router.post("/v1/experts", status_code=201)
async def add_expert(body: ExpertCreate, st: State, _: AdminDep) -> dict[str, Any]:
    spec = confined_spec(body, st)
    if st.runtime.registry.find(spec.name):
        raise E.BadRequest(f"expert {spec.name!r} already exists; DELETE it first", param="name", code="conflict")
    try:
        await st.runtime.register_expert(spec)  # the shared registry: every replica follows the store
    except ConfigError as e:
        raise E.BadRequest(str(e), param="name") from None
    st.forget_health()
    return spec.model_dump(mode="json")


@router.delete("/v1/experts/{name}")
async def delete_expert(name: str, st: State, _: AdminDep) -> dict[str, Any]:
    canonical = st.runtime.registry.find(name)
    if canonical is None:
        raise E.NotFound(f"unknown expert {name[:128]!r}", param="name")
    if canonical.lower() in st.config_names:
        raise E.Forbidden(f"{canonical!r} is an expert of the server's configuration file; it cannot be deleted over the API",
                          param="name", code="config_expert")
    await st.runtime.unregister_expert(canonical)  # from the shared registry, then here
    st.forget_health()
    return {"id": canonical, "object": "expert", "deleted": True}
