"""The delivery destinations: one client per API (MagicBell, Magnews), their auth, limits and senders."""

__all__: list[str] = []
