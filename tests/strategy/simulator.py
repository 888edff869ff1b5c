"""A tiny in-test world for property tests: it applies each decision of the real `decide` to a list
of routes, as the controller and the runtime would, one cycle at a time.

- Created routes start `provisioning` and, after a random number of cycles, become `running` +
  `healthy`, or fail (`failed_to_start`, `failed` true), per revision failure probability.
- Terminated routes disappear at once (they stop counting the moment the decision is applied), or,
  with `max_drain` set, stay `terminating` for 0..max_drain cycles (their process drains) and then
  disappear.
- Optionally, a capacity in route slots (`capacity`): every alive or terminating route holds one slot
  until it is gone; each cycle the deployment view says how many more routes can be placed
  (P = capacity - held, as the control layer will compute it), and the simulator checks that the
  routes held never exceed the capacity.
- Optionally, ready routes of the deploying revision crash (stopped as unhealthy: `terminated`, failed).
- The controller's bookkeeping: mode switches to the decision's, `set_paused` pauses, `last_progress_at`
  moves when a cycle creates or terminates routes or the number of ready target routes grows, and an
  operator promotes a rollout that awaits promotion (with `promote_probability`, each such cycle).
- A canary's bookkeeping: `set_canary_step` moves the step, starts it now and consumes the promotion;
  the decision's `weights` are kept (`weights`).

Randomness comes from a `random.Random` handed in by Hypothesis, so failures shrink and replay.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rollwise.model import (
    UNLIMITED,
    CapacityView,
    Decision,
    DeploymentView,
    Health,
    Mode,
    Policy,
    RouteStatus,
    RouteView,
    SubStep,
    Traffic,
)
from rollwise.strategy import decide
from rollwise.strategy.cycle import is_alive

from .helpers import T0

CYCLE = timedelta(seconds=5)
ENDS = (SubStep.COMPLETED, SubStep.ROLLED_BACK)
"""The sub-steps that end a rollout."""


@dataclass
class SimRoute:
    id: str
    revision: str
    status: RouteStatus
    health: Health
    traffic: Traffic
    ratio: float
    created_at: datetime
    status_updated_at: datetime
    failed: bool = False
    cycles_left: int = 0
    will_fail: bool = False

    def view(self) -> RouteView:
        return RouteView(
            id=self.id,
            revision=self.revision,
            status=self.status,
            health=self.health,
            traffic=self.traffic,
            traffic_ratio=self.ratio,
            has_health_check=True,
            failed=self.failed,
            created_at=self.created_at,
            status_updated_at=self.status_updated_at,
        )


@dataclass
class Simulator:
    desired: int
    policy: Policy
    rng: random.Random
    fail_probability: dict[str, float] = field(default_factory=dict)
    crash_probability: float = 0.0
    max_delay: int = 3
    operator_promotes: bool = True
    promote_probability: float = 1.0
    """Chance that the operator promotes in a cycle that awaits promotion (1.0: always)."""
    capacity: int | None = None
    """Route slots on the node; None: unlimited (the deployment view's capacity stays UNLIMITED)."""
    max_drain: int | None = None
    """Cycles a terminated route may stay `terminating`, holding its slot; None: it disappears at once."""
    current: str = "r1"
    deploying: str = "r2"
    mode: Mode = Mode.FORWARD
    paused: bool = False
    abort: bool = False
    promote: bool = False
    promote_full: bool = False
    canary_step: int = 0
    step_started_at: datetime = T0
    weights: dict[str, int] | None = None
    """The canary's split as the last decision set it (None: weigh by routes)."""
    now: datetime = T0
    routes: list[SimRoute] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    last_progress_at: datetime = T0
    on_cycle: Callable[[Simulator, Decision], None] | None = None
    _next_id: int = 0
    _ready_seen: int = 0

    def __post_init__(self) -> None:
        for _ in range(self.desired):
            self._add(self.current, Traffic.ACTIVE, 1.0, settled=True, created=self.now - timedelta(hours=1))

    # -- state --------------------------------------------------------------------------------------
    def deployment(self) -> DeploymentView:
        return DeploymentView(
            desired_replicas=self.desired,
            current_revision=self.current,
            deploying_revision=self.deploying,
            mode=self.mode,
            paused=self.paused,
            abort_requested=self.abort,
            promote_requested=self.promote,
            rollout_started_at=T0,
            last_progress_at=self.last_progress_at,
            capacity=self.room(),
            canary_step=self.canary_step,
            step_started_at=self.step_started_at,
            promote_full_requested=self.promote_full,
        )

    def held(self) -> int:
        """Slots held: every route whose process has not exited (provisioning, running, terminating)."""
        return sum(
            1 for r in self.routes
            if r.status in (RouteStatus.PROVISIONING, RouteStatus.RUNNING, RouteStatus.TERMINATING)
        )

    def room(self) -> CapacityView:
        if self.capacity is None:
            return UNLIMITED
        free = max(0, self.capacity - self.held())
        return CapacityView(placeable=free, need={"slot": 1}, free={"slot": free})

    def views(self) -> list[RouteView]:
        return [r.view() for r in self.routes]

    def alive(self) -> int:
        return sum(1 for v in self.views() if is_alive(v))

    def serving(self) -> int:
        """Routes that answer requests: alive, ready, and in the traffic layer with a weight."""
        return sum(
            1 for v in self.views()
            if is_alive(v) and v.is_ready and v.traffic is Traffic.ACTIVE and v.traffic_ratio > 0
        )

    def target(self) -> str:
        return self.deploying if self.mode is Mode.FORWARD else self.current

    def ready_targets(self) -> int:
        return sum(1 for v in self.views() if v.revision == self.target() and is_alive(v) and v.is_ready)

    # -- one cycle ----------------------------------------------------------------------------------
    def step(self) -> Decision:
        """Decide, check the decision's shape, apply it; the world does not move yet (see `advance`)."""
        views = self.views()
        decision = decide(self.deployment(), views, self.policy, self.now)
        self.decisions.append(decision)
        alive_ids = {v.id for v in views if is_alive(v)}
        assert set(decision.terminate) <= alive_ids, "terminates a route that is not alive"
        assert len(set(decision.terminate)) == len(decision.terminate)
        for c in decision.traffic:
            assert c.id in alive_ids and c.id not in decision.terminate
        target = self.deploying if decision.mode is Mode.FORWARD else self.current
        assert all(c.revision == target for c in decision.create), "creates a route of another revision"
        ready_now = self.ready_targets()
        self._apply(decision)
        assert self.capacity is None or self.held() <= self.capacity, f"over capacity: {decision.reason}"
        if decision.create or decision.terminate or ready_now > self._ready_seen:
            self.last_progress_at = self.now
        self._ready_seen = self.ready_targets()
        if self.on_cycle is not None:
            self.on_cycle(self, decision)
        return decision

    def advance(self) -> None:
        """Time passes: provisioning routes settle, ready target routes may crash."""
        self.now += CYCLE
        drained = {r.id for r in self.routes if r.status is RouteStatus.TERMINATING and r.cycles_left <= 0}
        self.routes = [r for r in self.routes if r.id not in drained]
        for r in self.routes:
            if r.status is RouteStatus.TERMINATING:
                r.cycles_left -= 1
            elif r.status is RouteStatus.PROVISIONING:
                r.cycles_left -= 1
                if r.cycles_left < 0:
                    if r.will_fail:
                        r.status, r.failed = RouteStatus.FAILED_TO_START, True
                    else:
                        r.status, r.health = RouteStatus.RUNNING, Health.HEALTHY
                    r.status_updated_at = self.now
            elif (
                r.status is RouteStatus.RUNNING
                and r.revision == self.deploying
                and self.crash_probability
                and self.rng.random() < self.crash_probability
            ):
                r.status, r.failed, r.status_updated_at = RouteStatus.TERMINATED, True, self.now

    def run(self, max_cycles: int, check: Callable[[Simulator, Decision], None] | None = None) -> Decision:
        """Cycles until a terminal sub-step (returned) or `max_cycles` (AssertionError)."""
        for _ in range(max_cycles):
            decision = self.step()
            if check is not None:
                check(self, decision)
            if decision.sub_step in ENDS:
                return decision
            if decision.sub_step is SubStep.AWAITING_PROMOTION and self.operator_promotes and (
                self.promote_probability >= 1.0 or self.rng.random() < self.promote_probability
            ):
                self.promote = True
            self.advance()
        raise AssertionError(f"no terminal sub-step after {max_cycles} cycles: {self.decisions[-1].reason}")

    # -- applying a decision ------------------------------------------------------------------------
    def _apply(self, decision: Decision) -> None:
        gone = set(decision.terminate)
        if self.max_drain is None:
            self.routes = [r for r in self.routes if r.id not in gone]
        else:
            for r in self.routes:
                if r.id in gone:
                    r.status, r.status_updated_at = RouteStatus.TERMINATING, self.now
                    r.cycles_left = self.rng.randint(0, self.max_drain)
        by_id = {r.id: r for r in self.routes}
        for c in decision.traffic:
            by_id[c.id].traffic, by_id[c.id].ratio = c.traffic, c.traffic_ratio
        for c in decision.create:
            self._add(c.revision, c.traffic, c.traffic_ratio, settled=False, created=self.now)
        self.mode = decision.mode
        if decision.set_paused:
            self.paused = True
        if decision.set_canary_step is not None:
            self.canary_step, self.step_started_at = decision.set_canary_step, self.now
            self.promote = self.promote_full = False
        self.weights = None if decision.weights is None else dict(decision.weights)

    def _add(self, revision: str, traffic: Traffic, ratio: float, *, settled: bool, created: datetime) -> None:
        self._next_id += 1
        route = SimRoute(
            id=f"{revision}-{self._next_id:03d}",
            revision=revision,
            status=RouteStatus.RUNNING if settled else RouteStatus.PROVISIONING,
            health=Health.HEALTHY if settled else Health.NOT_CHECKED,
            traffic=traffic,
            ratio=ratio,
            created_at=created,
            status_updated_at=created,
        )
        if not settled:
            route.cycles_left = self.rng.randint(0, self.max_delay)
            route.will_fail = self.rng.random() < self.fail_probability.get(revision, 0.0)
        self.routes.append(route)
