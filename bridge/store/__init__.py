"""Durable storage. ``open_store`` picks the backend from ``storage.url``."""

from __future__ import annotations

from bridge.config import StorageConfig
from bridge.store.base import Store


def create_store(config: StorageConfig) -> Store:
    """Build (not open) the store named by ``storage.url``."""
    if config.url.startswith("sqlite:///"):
        from bridge.store.sqlite import SQLiteStore

        return SQLiteStore(config.url, synchronous=config.synchronous)
    from bridge.store.postgres import PostgresStore

    return PostgresStore(config.url, pool_size=config.pool_size)


__all__ = ["Store", "create_store"]
