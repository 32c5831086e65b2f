"""The Magnify source: the OAuth client, the partner API client, checkpoints and the poll (arq cron)."""

__all__: list[str] = []
