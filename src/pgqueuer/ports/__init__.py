"""pgqueuer 1.x's ``pgqueuer.ports`` package. Only ``pgqueuer.ports.driver`` (the driver
protocols) is provided; ``pgqueuer.ports.tracing`` is not (docs/compat.md)."""
