"""What can answer: `/v1/models` (routers and experts, OpenAI's model list) and `/v1/experts` (add, list, delete)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from experts.errors import ConfigError
from experts.spec import ExpertSpec, format_validation_error
from orchestrator.gateway import errors as E
from orchestrator.gateway.deps import CallerDep, State
from orchestrator.protocol import ModelCard, ModelList
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
async def list_experts(st: State, _: CallerDep) -> dict[str, Any]:
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


@router.post("/v1/experts", status_code=201)
async def add_expert(request: Request, st: State, _: CallerDep) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise E.BadRequest("the request body is not valid JSON", code="invalid_json") from None
    try:
        spec = ExpertSpec.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        raise E.Unprocessable(format_validation_error(e, "expert").split("\n")[0], param=".".join(str(p) for p in first["loc"]) or None) from None
    if st.runtime.registry.find(spec.name):
        raise E.BadRequest(f"expert {spec.name!r} already exists; DELETE it first", param="name", code="conflict")
    try:
        st.runtime.registry.add(spec)
    except ConfigError as e:
        raise E.BadRequest(str(e), param="name") from None
    await st.runtime.store.upsert_experts([spec.model_dump(mode="json")])
    st.forget_health()
    return spec.model_dump(mode="json")


@router.delete("/v1/experts/{name}")
async def delete_expert(name: str, st: State, _: CallerDep) -> dict[str, Any]:
    canonical = st.runtime.registry.find(name)
    if canonical is None:
        raise E.NotFound(f"unknown expert {name!r}", param="name")
    backend = st.runtime.registry.remove(canonical)
    await backend.aclose()
    await st.runtime.store.delete_expert(canonical)
    st.forget_health()
    return {"id": canonical, "object": "expert", "deleted": True}
