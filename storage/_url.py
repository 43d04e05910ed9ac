from __future__ import annotations

import os

DEFAULT_STORAGE = "sqlite:///autotune.db"


def resolve_storage_url(url: str | None = None) -> str:
    """The storage URL: the one given, else $AUTOTUNE_STORAGE, else ./autotune.db.
    `postgresql://` means psycopg 3, the driver autotune installs."""
    resolved = url or os.environ.get("AUTOTUNE_STORAGE") or DEFAULT_STORAGE
    if resolved.startswith("postgresql://") or resolved.startswith("postgres://"):
        resolved = "postgresql+psycopg://" + resolved.split("://", 1)[1]
    return resolved


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    if url.startswith(("journal://", "grpc://")):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@", 1)[-1] if "@" in url else url
