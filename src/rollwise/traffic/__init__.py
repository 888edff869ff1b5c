"""The traffic layer: Traefik (file provider) in `traefik`, HTTP health probing in `health`, and the
`TrafficLayer` seam in `base` with a real in-package alternative (`base.NoTraffic`) for runs without a
proxy (the simulated runtime).

May import only rollwise.model (docs/architecture.md, "Layers").
"""
