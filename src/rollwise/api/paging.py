"""Paging of `GET /v1/deployments`: the page size, the opaque cursor and the headers that carry it.

A page is a JSON list, as the whole list was before paging (clients that read one page see the first
`limit` deployments, oldest first). When more deployments follow, the answer carries the cursor of the
next page twice: `X-Next-Cursor: <cursor>` and `Link: </v1/deployments?...&cursor=<cursor>>;
rel="next"` (the same query with the cursor). The last page has neither.

The cursor is keyset paging on the deployment id (the primary key; creation order): it encodes the last
id of the page, so a page costs one indexed range read whatever its position, and deployments created or
destroyed meanwhile neither repeat nor shift the pages after them. It is opaque to clients (`c1.` and
base64url) and checked on the way in: anything this module did not write is refused with 422 naming
`cursor`.

The summary form (`summary=true`) is the same list with each deployment's `routes` left out: what a
table of deployments needs (`rollwise get`), a fraction of the bytes.

Called by api.endpoints (the list endpoint). Must not: read the store.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from urllib.parse import urlencode

from pydantic import TypeAdapter

from rollwise.api.schemas import DeploymentOut
from rollwise.model import ValidationFailed

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_PREFIX = "c1."
NEXT_CURSOR_HEADER = "X-Next-Cursor"
PAGE = TypeAdapter(list[DeploymentOut])
"""Writes a page's JSON in one call; the summary form leaves `routes` out of every item."""


def encode_cursor(last_id: int) -> str:
    """The cursor of the page after the one that ended with deployment id `last_id`."""
    return _PREFIX + base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor continues after; ValidationFailed naming `cursor` for anything else."""
    problem = ValidationFailed(f"cursor: {cursor[:40]!r} is not a cursor of this API (use X-Next-Cursor as given)")
    if not cursor.startswith(_PREFIX) or len(cursor) > 40:
        raise problem
    body = cursor[len(_PREFIX):]
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
    except (binascii.Error, ValueError) as e:
        raise problem from e
    if not text.isdigit() or int(text) < 0 or encode_cursor(int(text)) != cursor:
        raise problem
    return int(text)


def next_headers(path: str, query: Sequence[tuple[str, str]], next_cursor: str | None) -> dict[str, str]:
    """`X-Next-Cursor` and `Link` (`path`, the page's `query` without its cursor, and the next cursor)
    for a page followed by `next_cursor`; none for the last page."""
    if next_cursor is None:
        return {}
    link = f"{path}?{urlencode([*query, ('cursor', next_cursor)])}"
    return {NEXT_CURSOR_HEADER: next_cursor, "Link": f'<{link}>; rel="next"'}
