"""Reading a console form's body: urlencoded only, capped, a few fields, no duplicates.

The console needs no file uploads, so no multipart parser is pulled in: a browser sends
``application/x-www-form-urlencoded``, which ``urllib.parse`` reads. The caps keep a
hostile body from costing more than a glance.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import HTTPException, Request, status

from producers.request_body import read_capped_body

__all__ = ["MAX_FORM_BYTES", "MAX_FORM_FIELDS", "read_form"]

#: Largest form body read (bytes).
MAX_FORM_BYTES = 16 * 1024
#: Most fields one form may send.
MAX_FORM_FIELDS = 20
FORM_TYPE = "application/x-www-form-urlencoded"


async def read_form(request: Request) -> dict[str, str]:
    """The form's fields (values stripped of surrounding whitespace).

    Raises:
      HTTPException: 415 for another media type, 413 beyond ``MAX_FORM_BYTES``, 400 for a body that
        is not UTF-8, has too many fields or names one field twice.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != FORM_TYPE:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"send the form as {FORM_TYPE}")
    body = await read_capped_body(request, MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "unreadable form") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "a form field was sent twice")
        fields[name] = value.strip()
    return fields
