"""Where routes run. `base` holds the seam (the Runtime protocol); `local` runs real processes and
`simulated` is a deterministic runtime with its own clock (tests and `rollwise simulate`).

May import only rollwise.model (docs/architecture.md, "Layers").
"""
