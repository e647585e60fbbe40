"""The second ceiling of the health route: a bare Litestar app (one route answering the service's health body, no
middleware, no plugins, no OpenAPI, no logging). `bench/run.py` serves it like the others (uvicorn, same worker
count, uvloop, httptools); the health row shows the service's throughput as a share of it too: what the framework
costs on its own, without anything of ours."""

from __future__ import annotations

from litestar import Litestar, get


@get("/api/v1/utils/health-check", cache=False)
async def health_check() -> bool:
    return True


app = Litestar(route_handlers=[health_check], openapi_config=None, logging_config=None)
