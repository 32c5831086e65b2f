"""The aiohttp service: webhook receiver, probes, metrics, admin API; and the event store."""

from bridge.app import create_app

__all__ = ["create_app"]
