"""Typed application state keys of the web service."""

from __future__ import annotations

from aiohttp import web
from arq.connections import ArqRedis

from bridge.store.reads import EventReader
from bridge.web.ingest_batcher import IngestBatcher
from config.settings import Settings

__all__ = ["INGEST", "READER", "REDIS", "SETTINGS"]

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", ArqRedis)
READER = web.AppKey("reader", EventReader)
INGEST = web.AppKey("ingest", IngestBatcher)
