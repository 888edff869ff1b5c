"""The control plane: lifecycle cycles, the route controller, the coordinator and the operations
(service layer) that the API and CLI call.

May import model, strategy, store, runtime and traffic (docs/architecture.md, "Layers").
"""
