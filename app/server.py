"""The HTTP server: uvicorn's httptools protocol with the two bounds it lacks.

- A request head (request line and headers) larger than `MAX_REQUEST_HEADER_BYTES` is answered 431 as soon as
  that many bytes have arrived: a 50 MB header is neither read whole nor held in memory.
- A request must arrive whole within `REQUEST_READ_TIMEOUT` seconds of its first byte (a new connection: of
  opening), else 408 and the connection is closed: a client that trickles its head or stops short of its
  Content-Length cannot hold a connection. Between requests uvicorn's keep-alive timeout applies.

Both are read from the settings of the app being served. Run with `uvicorn --http app.server:HttpProtocol`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from litestar import Litestar
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.config import Settings, get_settings

log = structlog.get_logger("app.server")


def served_settings(config: Config) -> Settings:
    """The settings of the Litestar app inside uvicorn's wrappers (proxy headers, message logger)."""
    app: Any = config.loaded_app
    while not isinstance(app, Litestar) and hasattr(app, "app"):
        app = app.app
    settings = app.state.get("settings") if isinstance(app, Litestar) else None
    return settings if isinstance(settings, Settings) else get_settings()


class HttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = served_settings(config)
        self.max_head_bytes = settings.MAX_REQUEST_HEADER_BYTES
        self.read_timeout = settings.REQUEST_READ_TIMEOUT
        self.receiving = False  # from a request's first byte until its last
        self.reading_head = True  # from a request's first byte until its headers are complete
        self.head_bytes = 0
        self.read_deadline: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        super().data_received(data)
        if self.reading_head and not self.refused:
            # Still no end of the head: count what the parser holds of it (on_headers_complete counts exactly).
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head_bytes:
                self._refuse(431, "Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.receiving, self.reading_head, self.head_bytes = True, True, 0
        if self.read_deadline is None:
            self._start_read_deadline()

    def on_headers_complete(self) -> None:
        if self.refused:
            return
        self.reading_head = False
        head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if head > self.max_head_bytes:
            self._refuse(431, "Request Header Fields Too Large")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refused:
            return
        self.receiving = False
        self._cancel_read_deadline()
        super().on_message_complete()

    def _start_read_deadline(self) -> None:
        self.read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _cancel_read_deadline(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _read_timed_out(self) -> None:
        self.read_deadline = None
        if self.transport.is_closing():
            return
        if not self.receiving:
            self.transport.close()  # opened and never used (a browser's preconnect, say): nobody to answer
            return
        cycle = None if self.reading_head else self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()  # the app answered without waiting for the rest: nothing more to say
            return
        if cycle is not None:
            # The app waits for the rest of the body: it gets a disconnect, and whatever it answers is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self._refuse(408, "Request Timeout")

    def _refuse(self, status: int, reason: str) -> None:
        """Answer in the contract's error shape and close: the rest of this connection's bytes are not read."""
        self.refused = True
        self._cancel_read_deadline()
        log.warning(reason.lower(), status_code=status, client=self.client[0] if self.client else None)
        body = b'{"detail":"' + reason.encode() + b'"}'
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self.transport.close()
