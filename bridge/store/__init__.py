"""The event store and the delivery queue in Redis. ``keys`` names every key the bridge uses."""

__all__: list[str] = []
