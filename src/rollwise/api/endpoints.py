"""The /v1 endpoints: each one validates its body (api.schemas), calls ONE `Operations` method, and turns
the records it returns into a response body. Refusals are the typed errors of `control.errors`, mapped to
statuses by `api.errors` — no endpoint picks a status for an error itself.

    POST   /v1/deployments                       create                    201
    GET    /v1/deployments                       list, a page at a time    200  (api.paging)
    GET    /v1/deployments/{name}                get                       200
    PATCH  /v1/deployments/{name}                replicas, policy (merged) 200
    DELETE /v1/deployments/{name}                destroy (drains)          202
    POST   /v1/deployments/{name}/revisions      add a revision            201
    GET    /v1/deployments/{name}/revisions      list revisions            200
    POST   /v1/deployments/{name}/rollout        activate a revision       202
    POST   /v1/deployments/{name}/promote|pause|resume|abort|undo          202
    GET    /v1/deployments/{name}/actions        the verbs that apply now  200
    GET    /v1/deployments/{name}/history        history rows, oldest first 200
    GET    /v1/deployments/{name}/plan           the next cycle's decision 200
    GET    /v1/deployments/{name}/analysis       a canary's measurements   200
    GET    /v1/deployments/{name}/rollouts       its rollouts, oldest first 200
    GET    /v1/deployments/{name}/rollouts/{id}/timeline  one rollout's samples and events  200

Called by `api.app.create_app`. Must not: touch the store directly, or write anything except through
`Operations`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, Security
from fastapi.security import HTTPBearer

from rollwise.api.errors import responses
from rollwise.api.paging import DEFAULT_LIMIT, MAX_LIMIT, PAGE, decode_cursor, encode_cursor, next_headers
from rollwise.api.schemas import (
    ActionsOut,
    AnalysisOut,
    analysis_out,
    CapacityOut,
    capacity_out,
    DeploymentCreate,
    DeploymentOut,
    DeploymentPatch,
    HistoryOut,
    PlanOut,
    PromoteRequest,
    RevisionOut,
    RolloutOut,
    RolloutRequest,
    TimelineOut,
    deployment_out,
    history_out,
    revision_out,
    rollout_out,
    timeline_out,
)
from rollwise.control.errors import NotApplicable
from rollwise.control.operations import DeploymentState, Operations
from rollwise.model import Lifecycle, ValidationFailed
from rollwise.model.revision import RevisionInput
from rollwise.store.records import DeploymentRecord
from rollwise.strategy.planio import decision_to_json

# The token is checked by the BearerAuth middleware (before body parsing); this scheme only documents
# it in the OpenAPI schema.
bearer = HTTPBearer(auto_error=False, description="The server's API token (see `rollwise server`)")

Name = Annotated[str, Path(description="Deployment name")]


def build_router(ops: Operations) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["deployments"], dependencies=[Security(bearer)])

    async def show_all(deps: list[DeploymentRecord], *, with_routes: bool = True) -> list[DeploymentOut]:
        loaded = await ops.routes_and_revisions(deps)
        now = ops.clock.now()
        return [deployment_out(dep, *loaded[dep.id], now=now, with_routes=with_routes) for dep in deps]

    async def show(dep: DeploymentRecord) -> DeploymentOut:
        return (await show_all([dep]))[0]

    def reply(state: DeploymentState) -> DeploymentOut:
        """The body of a write's answer, from what the one Operations call returned (no more reads)."""
        return deployment_out(state.deployment, state.routes, state.revisions, now=ops.clock.now())

    # --- deployments ----------------------------------------------------------------------------------

    @router.post(
        "/deployments", status_code=201, response_model=DeploymentOut, responses=responses(400, 401, 409, 413, 422, 503),
        summary="Create a deployment with its first revision",
    )
    async def create_deployment(body: DeploymentCreate) -> DeploymentOut:
        return reply(await ops.create(
            name=body.name, replicas=body.replicas, policy=body.policy.to_json(), revision=body.revision
        ))

    @router.get(
        "/deployments", response_model=list[DeploymentOut], responses=responses(401, 422, 503),
        summary="List deployments, a page at a time (oldest first; X-Next-Cursor and Link name the next page)",
    )
    async def list_deployments(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Deployments per page")] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(
            max_length=64, description="The X-Next-Cursor of the page before (absent: the first page)")] = None,
        lifecycle: Annotated[list[Lifecycle] | None, Query(
            description="Only these lifecycles (repeat the parameter for several)")] = None,
        deploying: Annotated[bool | None, Query(
            description="true: only deployments with a rollout in progress; false: only those without")] = None,
        summary: Annotated[bool, Query(description="Leave out each deployment's routes")] = False,
    ) -> Response:
        after = decode_cursor(cursor) if cursor is not None else None
        deps, more = await ops.page(after=after, limit=limit, lifecycles=lifecycle, deploying=deploying)
        shown = await show_all(deps, with_routes=not summary)
        body = PAGE.dump_json(shown, exclude={"__all__": {"routes"}} if summary else None)
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
        more_headers = next_headers(request.url.path, query, encode_cursor(deps[-1].id) if more else None)
        return Response(body, media_type="application/json", headers=more_headers)

    @router.get("/deployments/{name}", response_model=DeploymentOut, responses=responses(401, 404, 422, 503),
                summary="One deployment with its routes")
    async def get_deployment(name: Name) -> DeploymentOut:
        return await show(await ops.get(name))

    @router.patch(
        "/deployments/{name}", response_model=DeploymentOut, responses=responses(400, 401, 404, 409, 413, 422, 503),
        summary="Change replicas and/or policy fields",
    )
    async def patch_deployment(name: Name, body: DeploymentPatch) -> DeploymentOut:
        fields = body.policy.model_dump(mode="json", exclude_unset=True) if body.policy is not None else None
        return reply(await ops.patch(name, replicas=body.replicas, policy=fields))

    @router.delete("/deployments/{name}", status_code=202, response_model=DeploymentOut,
                   responses=responses(401, 404, 422, 503), summary="Destroy: routes drain and stop, then it is gone")
    async def delete_deployment(name: Name) -> DeploymentOut:
        return reply(await ops.destroy(name))

    # --- revisions and rollouts -----------------------------------------------------------------------

    @router.post(
        "/deployments/{name}/revisions", status_code=201, response_model=RevisionOut,
        responses=responses(400, 401, 404, 413, 422, 503), summary="Add a revision (does not activate it)",
    )
    async def add_revision(name: Name, body: RevisionInput) -> RevisionOut:
        return revision_out(await ops.add_revision(name, body))

    @router.get("/deployments/{name}/revisions", response_model=list[RevisionOut],
                responses=responses(401, 404, 422, 503), summary="Revisions, oldest first")
    async def list_revisions(name: Name) -> list[RevisionOut]:
        return [revision_out(r) for r in await ops.revisions(name)]

    @router.post(
        "/deployments/{name}/rollout", status_code=202, response_model=DeploymentOut,
        responses=responses(400, 401, 404, 409, 413, 422, 503),
        summary="Activate a revision: start a rollout to it (a no-op for the revision already serving)",
    )
    async def rollout(name: Name, body: RolloutRequest) -> DeploymentOut:
        return reply(await ops.activate(name, body.revision, supersede=body.supersede))

    def verb(path: str, summary: str, call: Callable[[str], Awaitable[DeploymentState]]) -> None:
        async def endpoint(name: Name) -> DeploymentOut:
            return reply(await call(name))

        endpoint.__name__ = path
        router.add_api_route(
            f"/deployments/{{name}}/{path}", endpoint, methods=["POST"], status_code=202,
            response_model=DeploymentOut, responses=responses(401, 404, 409, 422, 503), summary=summary,
        )

    @router.post(
        "/deployments/{name}/promote", status_code=202, response_model=DeploymentOut,
        responses=responses(401, 404, 409, 422, 503),
        summary="Blue-green: switch traffic now; canary: complete the current step (all of them with full)",
    )
    async def promote(name: Name, body: PromoteRequest | None = None) -> DeploymentOut:
        return reply(await ops.promote(name, full=body.full if body is not None else False))

    verb("pause", "Pause the rollout in progress", ops.pause)
    verb("resume", "Resume a paused rollout", ops.resume)
    verb("abort", "Abort the rollout in progress: roll back now", ops.abort)
    verb("undo", "Roll out the revision that served before the current one", ops.undo)

    @router.get("/deployments/{name}/actions", response_model=ActionsOut, responses=responses(401, 404, 422, 503),
                summary="The operator verbs that apply now (the others answer 409)")
    async def actions(name: Name) -> ActionsOut:
        return ActionsOut(actions=list(await ops.actions(name)))

    # --- capacity -------------------------------------------------------------------------------------

    @router.get("/capacity", response_model=CapacityOut, responses=responses(401, 503),
                summary="Each node's slots: total, held, free, and which route holds which device")
    async def capacity() -> CapacityOut:
        return capacity_out(await ops.capacity())

    # --- history and plan -----------------------------------------------------------------------------

    @router.get("/deployments/{name}/history", response_model=list[HistoryOut],
                responses=responses(401, 404, 422, 503), summary="Recorded steps, oldest first")
    async def history(
        name: Name,
        limit: Annotated[int | None, Query(ge=1, le=100_000, description="Only the last N rows")] = None,
    ) -> list[HistoryOut]:
        return [history_out(h) for h in await ops.history(name, limit=limit)]

    @router.get(
        "/deployments/{name}/analysis", response_model=AnalysisOut, responses=responses(401, 404, 422, 503),
        summary="A canary's analysis: the current rollout's counts and measurements, oldest first",
    )
    async def analysis(
        name: Name,
        every_rollout: Annotated[bool, Query(alias="all", description="Every rollout's measurements")] = False,
    ) -> AnalysisOut:
        return analysis_out(*await ops.analysis(name, every_rollout=every_rollout))

    @router.get("/deployments/{name}/rollouts", response_model=list[RolloutOut],
                responses=responses(401, 404, 422, 503), summary="The deployment's rollouts, oldest first")
    async def rollouts(name: Name) -> list[RolloutOut]:
        return [rollout_out(r) for r in await ops.rollouts(name)]

    @router.get(
        "/deployments/{name}/rollouts/{rollout_id}/timeline", response_model=TimelineOut,
        responses=responses(401, 404, 422, 503),
        summary="One rollout's timeline: ready routes and traffic share per revision over time, and its events",
    )
    async def timeline(
        name: Name, rollout_id: Annotated[int, Path(ge=1, le=2**31 - 1, description="The rollout's id")]
    ) -> TimelineOut:
        return timeline_out(await ops.timeline(name, rollout_id))

    @router.get(
        "/deployments/{name}/plan", response_model=PlanOut, responses=responses(401, 404, 409, 422, 503),
        summary="Dry run: the decision the next cycle would take (the `rollwise plan` output format)",
    )
    async def plan(name: Name) -> dict[str, Any]:
        try:
            decision = await ops.plan(name)
        except ValidationFailed as e:
            # The stored state cannot be decided: not the request's fault, so not a 422.
            raise NotApplicable(f"deployment {name!r}: no decision for its current state: {e.message}") from e
        return decision_to_json(decision)

    return router
