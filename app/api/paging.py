"""The `skip`/`limit` query parameters of every list route (GET /items/, GET /users/)."""

from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

from app.schemas import PAGE_MAX

# The most rows one page holds (issue 23): ten times the template's default of 100, which is also the page its
# frontend asks for (`?skip=0&limit=100`, admin and items pages), about 180 kB of items. `limit=100000` was an
# 18 MB answer that held a connection for seconds (eight at once met the statement timeout). Above it the answer is
# 422 `less_than_equal` ("Input should be less than or equal to 1000", ctx {"le": 1000}), as pydantic's `le=1000`
# words it; the OpenAPI states it as the parameter's `maximum`. The template has no cap: up to it, it is answered
# exactly as there.
LIMIT_MAX = 1000

Skip = Annotated[int, Parameter(ge=0, le=PAGE_MAX)]
Limit = Annotated[int, Parameter(ge=0, le=LIMIT_MAX)]
