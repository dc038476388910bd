"""Stores: where executions, keys and controls live. ``open_store`` picks one by URL scheme."""

from __future__ import annotations

import re

from ..errors import StoreError
from .base import Store


def mask_url(url: str) -> str:
    """The URL with any password (``user:password@`` or ``?password=``) replaced by ``***``."""
    masked = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", masked, flags=re.IGNORECASE)


def open_store(url: str) -> Store:
    """Open the store a database URL names (``sqlite:///...`` or ``postgresql://...``)."""
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        try:
            from .postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise StoreError(
                f"cannot use {mask_url(url)}: the PostgreSQL store needs psycopg2; "
                "install it with `pip install 'tbay[postgres]'`"
            ) from exc
        return PostgresStore(url)  # type: ignore[no-any-return,unused-ignore]
    raise StoreError(
        f"unsupported database URL {mask_url(url)!r}: use sqlite:///path/to/file.db or "
        "postgresql://user:password@host/dbname"
    )


__all__ = ["Store", "mask_url", "open_store"]
