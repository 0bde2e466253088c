"""Reading a webhook's raw body once, with a cap, before anything parses it."""

from __future__ import annotations

from fastapi import HTTPException, Request, status

from config.domain import is_ascii_digits

__all__ = ["read_capped_body"]


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 beyond ``limit`` bytes without reading the rest.

    The cap is checked against ``Content-Length`` first and then against the
    bytes actually read, so a chunked or lying sender is stopped too. A
    ``Content-Length`` that is not a number is a 400.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not is_ascii_digits(declared):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "bad Content-Length")
        if int(declared) > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
