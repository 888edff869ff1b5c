"""rollwise.api: the REST API of a rollwise server (FastAPI).

    app       create_app: wiring, /healthz, /metrics
    endpoints the /v1 endpoints, each one call into control.operations.Operations
    limits    the request body size limit (413)
    schemas   request/response models (documented in /openapi.json) and record -> response mapping
    errors    the one table from rollwise error codes to HTTP statuses; JSON error bodies
    auth      the bearer token: where it comes from, and the check on /v1
    metrics   Prometheus metrics in a per-app registry

Who calls it: `rollwise server` (cli.serve.run_server) and tests. It must not reach past `control` into
the runtime or the traffic layer, nor write to the store except through `Operations`.
"""
