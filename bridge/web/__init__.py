"""The aiohttp service: webhook receiver, probes, metrics, admin API (``create_app``)."""

from bridge.web.app import create_app

__all__ = ["create_app"]
