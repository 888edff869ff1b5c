"""rollwise: zero-downtime rollouts for model-serving deployments.

Layers (see docs/architecture.md): cli/api -> control -> strategy | store | runtime | traffic -> model.
"""

__version__ = "0.1.0"
