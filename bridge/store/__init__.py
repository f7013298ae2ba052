"""Durable storage. ``create_store`` picks the backend from ``storage.url``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.store.base import Store

if TYPE_CHECKING:  # the SQLite writer process imports this package: keep it light
    from bridge.config import StorageConfig


def create_store(config: StorageConfig) -> Store:
    """Build (not open) the store named by ``storage.url``."""
    key = config.search_key.get_secret_value() if config.search_key is not None else None
    if config.url.startswith("sqlite:///"):
        from bridge.store.sqlite import SQLiteStore

        return SQLiteStore(config.url, synchronous=config.synchronous, search_key=key)
    from bridge.store.postgres import PostgresStore

    return PostgresStore(
        config.url, pool_size=config.pool_size, search_key=key, pgbouncer=config.pgbouncer
    )


__all__ = ["Store", "create_store"]
