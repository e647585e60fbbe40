"""The built frontend served at `/`, as the template serves it with FastAPI's `app.frontend("/", directory=...)`.

Litestar's static files router serves the files (a folder's `index.html`, `404.html` for a missing path). Around it,
the rest of what FastAPI's frontend answers:

- every route of the service wins, its 405s and both forms of its paths included: the router's catch-all path only
  sees what no route matched, and the paths routing cannot place at all (`/api/v1/nope`) reach the same fallback
  through the app's 404 handler;
- a GET or HEAD of a missing path answers `404.html` (404) when the build has one, else `index.html` (200) to a
  request that accepts HTML (a deep link of the single-page app, `/items`), else the service's JSON 404;
- a folder asked for without its trailing slash is redirected (307) to it, so that its page's relative links work;
- other methods answer 405 where a GET would find a file, 404 elsewhere;
- conditional requests (`If-None-Match`, else `If-Modified-Since`) answer 304.

And beyond it: Vite's hashed assets (`/assets/index-BZ3x7Q1a.js`) are cached for a year as immutable, the pages
(`index.html`, the fallbacks) are revalidated on every use (`no-cache`), and text files go compressed to a client
that accepts it: the build's own `file.js.br` / `file.js.gz` when it has them, else gzip on the fly."""

from __future__ import annotations

import errno
import re
import zlib
from email.utils import parsedate_to_datetime
from mimetypes import guess_type
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import unquote

from litestar import HttpMethod, Request, Response, Router, head, route
from litestar.config.app import AppConfig
from litestar.datastructures import URL, Headers, MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import InternalServerException, MethodNotAllowedException, NotFoundException
from litestar.file_system import BaseLocalFileSystem
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPlugin
from litestar.response.base import ASGIResponse
from litestar.response.file import ASGIFileResponse
from litestar.response.redirect import ASGIRedirectResponse
from litestar.static_files import StaticFiles, create_static_files_router
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_304_NOT_MODIFIED,
    HTTP_307_TEMPORARY_REDIRECT,
    HTTP_404_NOT_FOUND,
    HTTP_500_INTERNAL_SERVER_ERROR,
)
from litestar.types import ASGIApp, ExceptionHandlersMap, HTTPResponseStartEvent, Message, Receive, Scope, Send

from app.auth import EXCLUDE_FROM_AUTH

FRONTEND = "frontend"  # the opt key marking the frontend's handlers
READ_METHODS = frozenset({"GET", "HEAD"})
OTHER_METHODS = [
    HttpMethod.POST,
    HttpMethod.PUT,
    HttpMethod.PATCH,
    HttpMethod.DELETE,
    HttpMethod.OPTIONS,
    HttpMethod.TRACE,
]
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
# Vite's build names: assets/[name]-[hash].[ext], the hash 8 characters of base64url.
HASHED_ASSET = re.compile(r"/assets/(?:[^/]+/)*[^/]+-[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9]+)+")
TEXT_SUFFIXES = frozenset({".html", ".htm", ".js", ".mjs", ".css", ".svg", ".json", ".txt", ".map", ".xml"})
TEXT_TYPES = frozenset({"application/javascript", "application/json", "application/manifest+json", "image/svg+xml"})
PRECOMPRESSED = (("br", ".br"), ("gzip", ".gz"))  # preferred first
GZIP_MIN_BYTES = 500  # smaller bodies gain less than the header costs
NOT_MODIFIED_HEADERS = frozenset({b"cache-control", b"content-location", b"etag", b"expires", b"vary"})


class Frontend(InitPlugin):
    """Serves the build in `directory` at `/`: the router of its files and the app's 404 handler for the paths no
    route matched. A plugin, since the latter is the app's to set."""

    def __init__(self, directory: Path) -> None:
        # For the lookups of our own (fallbacks, precompressed siblings, other methods): the router's own instance
        # is not reachable, and this one resolves and confines paths the same way.
        self.files = StaticFiles(is_html_mode=True, directories=[directory], file_system=BaseLocalFileSystem())
        self._app_handlers: ExceptionHandlersMap = {}
        self.router = self._router()

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        self._app_handlers = dict(app_config.exception_handlers)
        app_config.route_handlers.append(self.router)
        # Under the status code: it is looked up before any exception class.
        app_config.exception_handlers = {**self._app_handlers, HTTP_404_NOT_FOUND: self.on_not_found}
        return app_config

    def _router(self) -> Router:
        files = self.files

        @head("/", name="frontend/index-head")
        async def index_head() -> ASGIFileResponse:
            """Litestar's html_mode serves GET / only."""
            return await files.handle(path="/", is_head_response=True)

        @route(["/", "/{file_path:path}"], http_method=OTHER_METHODS, name="frontend/other-methods")
        async def other_methods(request: Request[Any, Any, Any]) -> None:
            if await self.resource(request.scope["path"]) is not None:
                raise MethodNotAllowedException(headers={"Allow": "GET, HEAD"})
            raise NotFoundException()

        static = create_static_files_router(path="/", directories=[files.directories[0]], html_mode=True, name=FRONTEND)
        return Router(
            path="/",
            # `other_methods` first: the route it shares with the static files' catch-all then takes its OPTIONS
            # rather than Litestar's (which would answer 204 and list methods that only ever answer 405).
            route_handlers=[other_methods, index_head, static],
            include_in_schema=False,
            opt={EXCLUDE_FROM_AUTH: True, FRONTEND: True},
            middleware=[DefineMiddleware(FrontendHeaders, frontend=self)],
            # Under the status code, as the app's own 500 handler is.
            exception_handlers={HTTP_500_INTERNAL_SERVER_ERROR: self.on_server_error},
        )

    async def _lookup(self, path: str | PurePath, kind: str) -> tuple[Path, Any] | None:
        """The `kind` ("file", "directory") at URL path `path` under the build (never outside it), with its info."""
        try:
            found, info = await self.files.get_fs_info(self.files.directories, Path(*PurePath(path).parts[1:]))
        except InternalServerException as exc:
            if _is_no_such_path(exc):
                return None
            raise
        return (found, info) if found is not None and info is not None and info["type"] == kind else None

    async def file(self, path: str | PurePath) -> tuple[Path, Any] | None:
        return await self._lookup(path, "file")

    async def is_folder(self, path: str) -> bool:
        return await self._lookup(path, "directory") is not None

    async def resource(self, path: str) -> tuple[Path, Any] | None:
        """What a GET of `path` serves: the file, or a folder's index.html."""
        found = await self.file(path)
        if found is None and await self.is_folder(path):
            found = await self.file(f"{path.rstrip('/')}/index.html")
        return found

    def on_not_found(self, request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        handler = request.scope.get("route_handler")
        routed_here = handler is not None and bool(handler.opt.get(FRONTEND))
        if handler is not None and not routed_here:
            return self._app_handler(request, exc)  # an API route's own 404 ("User not found"): untouched
        if request.method not in READ_METHODS:
            return self._app_handler(request, NotFoundException())
        fallback = self._fallback(request)
        # A path routing could not place never went through the router's middleware: it goes through it here.
        return _Answer(fallback if routed_here else FrontendHeaders(fallback, self, folders=False))

    def on_server_error(self, request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        """A path through a file (`/index.html/x`) or too long for the file system has no file: Litestar's file
        system adapter reports it as a 500."""
        if isinstance(exc, InternalServerException) and _is_no_such_path(exc):
            return self.on_not_found(request, NotFoundException())
        return self._app_handler(request, exc)

    def _fallback(self, request: Request[Any, Any, Any]) -> ASGIApp:
        """404.html, else index.html to a request that accepts HTML, else the service's JSON 404 (the static files'
        own message names the path on disk)."""

        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            candidates = [("/404.html", HTTP_404_NOT_FOUND)]
            if accepts_html(request.headers.get("accept", "")):
                candidates.append(("/index.html", HTTP_200_OK))
            for name, status in candidates:
                if found := await self.file(name):
                    file_path, info = found
                    response: ASGIResponse = ASGIFileResponse(
                        file_path=file_path,
                        file_info=info,
                        filename=file_path.name,
                        status_code=status,
                        is_head_response=request.method == "HEAD",
                    )
                    break
            else:
                response = self._app_handler(request, NotFoundException()).to_asgi_response(app=None, request=request)
            await response(scope, receive, send)

        return answer

    def _app_handler(self, request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        """What the app answers `exc` with when the frontend has nothing to add (Litestar's lookup order)."""
        handlers = self._app_handlers
        handler = handlers.get(getattr(exc, "status_code", -1)) or next(
            (handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None
        )
        if handler is None:
            raise exc
        answered: Response[Any] = handler(request, exc)
        return answered


class FrontendHeaders:
    """The frontend router's middleware: what FastAPI's frontend answers and Litestar's static files do not (the
    folder redirect, 304s) and our caching and compression (see the module's docstring)."""

    def __init__(self, app: ASGIApp, frontend: Frontend, *, folders: bool = True) -> None:
        self.app = app
        self.frontend = frontend
        self.folders = folders  # False for a fallback: it serves no file of the request's path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        if scope["type"] != ScopeType.HTTP or method not in READ_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.folders and await self._is_folder_without_slash(scope):
            url = URL.from_scope(scope)
            redirect = ASGIRedirectResponse(
                path=str(url.with_replacements(path=url.path + "/")), status_code=HTTP_307_TEMPORARY_REDIRECT
            )
            await redirect(scope, receive, send)
            return
        request = Headers.from_scope(scope)
        codings = accepted_codings(request.get("accept-encoding", ""))
        reply = _Reply(send, request, path, codings, head=method == "HEAD")
        if self.folders and PurePath(path).suffix in TEXT_SUFFIXES and "file_path" in scope["path_params"]:
            for coding, suffix in PRECOMPRESSED:
                if coding in codings and await self.frontend.file(path + suffix):
                    # The static files handler reads its file from here; a new dict, as Litestar caches the parsed
                    # one per path. It names `file.js.br` as text/javascript with Content-Encoding: br itself.
                    path_params: dict[str, Any] = {**scope["path_params"], "file_path": PurePath(path + suffix)}
                    scope["path_params"] = path_params
                    reply.precompressed = coding
                    break
        await self.app(scope, receive, reply.send)

    async def _is_folder_without_slash(self, scope: Scope) -> bool:
        raw_path: bytes = scope.get("raw_path") or b""
        if not raw_path or raw_path.endswith(b"/") or scope["path"] == "/":
            return False
        path: str = scope["path"]
        return await self.frontend.is_folder(path) and await self.frontend.resource(path) is not None


class _Reply:
    """One response of the frontend on its way out: headers set, compressed, or turned into a 304."""

    def __init__(self, send: Send, request: Headers, path: str, codings: set[str], *, head: bool) -> None:
        self._send = send
        self.request = request
        self.path = path
        self.codings = codings
        self.head = head
        self.precompressed: str | None = None
        self._gzip: Any = None  # zlib's compressor while compressing on the fly
        self._no_body = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start(message)
            await self._send(message)
            if self._no_body:
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if message["type"] == "http.response.body":
            if self._no_body:
                return
            if self._gzip is not None:
                body = self._gzip.compress(message.get("body", b""))
                if not message.get("more_body", False):
                    body += self._gzip.flush()
                message = {"type": "http.response.body", "body": body, "more_body": message.get("more_body", False)}
        await self._send(message)

    def _start(self, message: HTTPResponseStartEvent) -> None:
        status: int = message["status"]
        headers = MutableScopeHeaders.from_message(message)
        disposition = headers.get("content-disposition")
        if disposition is None:
            return  # not a file: the JSON 404
        del headers["content-disposition"]  # Litestar names every file it sends; FastAPI does not
        if "content-type" not in headers:  # nor does Litestar say the type of a HEAD's
            guessed = guess_type(_filename(disposition))[0] or "application/octet-stream"
            headers["content-type"] = f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed
        media_type = headers["content-type"].partition(";")[0].strip().lower()
        if media_type == "text/html":
            headers["cache-control"] = NO_CACHE
        elif status == HTTP_200_OK and HASHED_ASSET.fullmatch(self.path):
            headers["cache-control"] = IMMUTABLE
        if _is_text(media_type, self.path):
            self._compression(headers, status)
        # Only a file's own 200 (RFC 9110 13.2.1; Starlette also answers a 404.html with 304).
        if status == HTTP_200_OK and not_modified(self.request, headers):
            message["status"] = HTTP_304_NOT_MODIFIED
            message["headers"] = [(name, value) for name, value in message["headers"] if name in NOT_MODIFIED_HEADERS]
            self._gzip = None
            self._no_body = True

    def _compression(self, headers: MutableScopeHeaders, status: int) -> None:
        headers.extend_header_value("vary", "Accept-Encoding")
        if self.precompressed is not None:
            headers["content-encoding"] = self.precompressed
        elif (
            "gzip" in self.codings
            and status in (HTTP_200_OK, HTTP_404_NOT_FOUND)
            and "content-encoding" not in headers
            and int(headers.get("content-length", "0")) >= GZIP_MIN_BYTES
        ):
            del headers["content-length"]
            headers["content-encoding"] = "gzip"
            if (etag := headers.get("etag")) and not etag.startswith("W/"):
                headers["etag"] = f"W/{etag}"  # no longer these bytes: weak, as nginx makes it
            if not self.head:
                self._gzip = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)


class _Delegate(ASGIResponse):
    __slots__ = ("_app",)

    def __init__(self, app: ASGIApp) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class _Answer(Response[None]):
    """An exception handler's answer made by an ASGI app (a file, looked up when answering)."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(content=None)
        self._app = app

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        return _Delegate(self._app)


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 1.0
    return 1.0


def _media_ranges(header: str) -> dict[str, float]:
    ranges: dict[str, float] = {}
    for part in header.split(","):
        name, *params = part.split(";")
        if name := name.strip().lower():
            ranges[name] = _quality(params)
    return ranges


def accepts_html(accept: str) -> bool:
    """A browser's navigation, as FastAPI tells it: text/html or application/xhtml+xml listed with q > 0."""
    ranges = _media_ranges(accept)
    return any(ranges.get(media_type, 0) != 0 for media_type in ("text/html", "application/xhtml+xml"))


def accepted_codings(accept_encoding: str) -> set[str]:
    """Of br and gzip, those `Accept-Encoding` allows (by name or `*`, with q > 0)."""
    codings = _media_ranges(accept_encoding)
    anything = codings.get("*", 0.0)
    return {coding for coding in ("br", "gzip") if codings.get(coding, anything) > 0}


def not_modified(request: Headers, response: MutableScopeHeaders) -> bool:
    """`If-None-Match` decides when sent (weak comparison, `*` matches), else `If-Modified-Since`."""
    if (if_none_match := request.get("if-none-match")) is not None:
        etag = response.get("etag")
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or (etag is not None and etag.removeprefix("W/") in tags)
    since, modified = request.get("if-modified-since"), response.get("last-modified")
    if not since or not modified:
        return False
    try:
        return parsedate_to_datetime(modified) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


def _filename(disposition: str) -> str:
    """The file's name in Litestar's Content-Disposition: `inline; filename="a.js"`, `filename*=utf-8''a%20b.js`."""
    _, _, name = disposition.partition("filename")
    name = name.lstrip("*=").removeprefix("utf-8''").strip('"')
    return unquote(name)


def _is_text(media_type: str, path: str) -> bool:
    return media_type.startswith("text/") or media_type in TEXT_TYPES or PurePath(path).suffix in TEXT_SUFFIXES


def _is_no_such_path(exc: InternalServerException) -> bool:
    """Litestar's file system adapter wraps what the file system said."""
    cause = exc.__cause__
    return isinstance(cause, FileNotFoundError | NotADirectoryError) or (
        isinstance(cause, OSError) and cause.errno == errno.ENAMETOOLONG
    )
