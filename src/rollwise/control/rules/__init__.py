"""The pure rules of the control plane: state in, changes out; no I/O, no clock, no asyncio.

    transitions  every change of a deployment's lifecycle and rollout (the one owner)
    deploying    the DEPLOYING cycle's rule: strategy decision -> Outcome (bounded evaluation errors)
    lifecycle    PENDING, SCALING/READY replica reconciliation, DESTROYING
    outcome      one deployment's share of a cycle's single write, gathered into one ChangeSet
    views        records -> the strategy engine's frozen views
    routing      the routing table the proxy serves, and fail-open
    restarts     the crash-loop back-off, derived from failed routes
    condition    a deployment's condition in words (fail_open, degraded, next_restart_at)
    capacity     what is free on the nodes during one cycle, P per deployment (id order)
    analysis     a canary analysis's verdicts and when it is due

The I/O that runs them lives one level up (cycles, route_controller, coordinator, operations,
supervisor). An import-linter contract keeps this package pure (pyproject.toml).
"""
