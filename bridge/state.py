"""Typed application state keys of the web service."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from bridge.ingest_batcher import IngestBatcher
from bridge.store import EventStore
from config.settings import Settings

__all__ = ["INGEST", "REDIS", "SETTINGS", "STORE"]

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", EventStore)
INGEST = web.AppKey("ingest", IngestBatcher)
