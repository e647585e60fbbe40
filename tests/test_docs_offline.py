"""The API docs work on a closed network (issue 24): /docs (Swagger UI) and /redoc load their JavaScript, CSS and
icon from this service (app/docs.py), and a real browser that can reach no other host renders both and asks no
other host for anything."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from litestar import Litestar

from app.main import create_app
from tests.conftest import LiveServer, make_settings, prepare

CHROMIUM = "/usr/bin/chromium"
PAGES = ["/docs", "/redoc"]
YEAR = 365 * 24 * 3600


@dataclass
class Docs:
    url: str
    app: Litestar


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('docs') / 'docs.db'}"
    prepare(url)
    app = create_app(make_settings(url))
    with LiveServer(app) as server:
        yield Docs(url=server.url, app=app)


class Assets(HTMLParser):
    """What a page makes the browser load: `<script src>` and `<link href>` (stylesheets and icons)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []  # (kind, URL as written)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.found.append(("script", attributes["src"] or ""))
        elif tag == "link" and attributes.get("href"):
            self.found.append((attributes.get("rel") or "link", attributes["href"] or ""))


def assets_of(html: str) -> list[tuple[str, str]]:
    parser = Assets()
    parser.feed(html)
    return parser.found


EXPECTED_TYPES = {"script": "javascript", "stylesheet": "text/css", "icon": "image/"}


@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_load_only_this_services_assets(docs: Docs, page: str) -> None:
    response = httpx.get(docs.url + page)  # no token: the docs and their assets are open to anyone
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "//cdn" not in response.text
    # And what a UI's script would still fetch from elsewhere, the browser refuses (ReDoc's Redocly logo).
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assets = assets_of(response.text)
    kinds = {kind for kind, _ in assets}
    assert kinds >= ({"script", "stylesheet", "icon"} if page == "/docs" else {"script", "icon"}), assets
    assert kinds <= set(EXPECTED_TYPES), assets  # no Google Fonts or other stylesheets of ReDoc's
    for kind, written in assets:
        # Same origin: a path of ours, never a scheme or a `//host/` of another server.
        assert written.startswith("/docs/static/"), written
        assert not written.startswith("//"), written
        target = urljoin(docs.url + page, written)
        assert urlsplit(target).netloc == urlsplit(docs.url).netloc, written
        asset = httpx.get(target)
        assert asset.status_code == 200, written
        assert EXPECTED_TYPES[kind] in asset.headers["content-type"], (written, asset.headers["content-type"])
        assert len(asset.content) > 500, written
        # The package's version is in the URL: cached for a year, never revalidated.
        cache_control = asset.headers["cache-control"]
        assert f"max-age={YEAR}" in cache_control, cache_control
        assert "immutable" in cache_control, cache_control


def test_assets_stay_out_of_the_openapi_document_and_unknown_files_are_404s(docs: Docs) -> None:
    assert not [path for path in docs.app.openapi_schema.paths or {} if path.startswith("/docs")]
    script = next(src for kind, src in assets_of(httpx.get(docs.url + "/docs").text) if kind == "script")
    base = script.rsplit("/", 2)[0]
    assert httpx.get(f"{docs.url}{base}/no-such-file.js").status_code == 404
    assert httpx.get(f"{docs.url}{base}/../../../app/config.py").status_code == 404


def test_the_bundles_come_from_the_wheel_without_django() -> None:
    """drf-spectacular-sidecar ships the bundles; its Django dependency is excluded (pyproject.toml) and its
    package is never imported."""
    assert importlib.util.find_spec("drf_spectacular_sidecar") is not None
    assert importlib.util.find_spec("django") is None


@dataclass
class RecordingProxy:
    """The browser's proxy: every request that would leave this machine comes here, is written down and refused.
    (Chromium never proxies loopback addresses, so the service itself is reached directly.)"""

    sock: socket.socket = field(default_factory=socket.socket)
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                try:
                    line = connection.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                    self.requests.append(line)
                    connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.sock.close()


def chromium() -> str:
    """The browser: the test that runs it is marked `needs("chromium")`, so without it that test is skipped with the
    way to get it, except in CI, where it fails, so CI never passes by skipping (.ci/run installs Debian's chromium).
    """
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    assert path is not None
    return path


def rendered_dom(url: str, proxy: RecordingProxy, profile: Path) -> str:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        # No other host exists for this browser: names do not resolve, and whatever still tries goes to the proxy.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--proxy-server=http://{proxy.address}",
        "--proxy-bypass-list=127.0.0.1",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


class Elements(HTMLParser):
    """The text inside the first element with `css_class` among its classes."""

    def __init__(self, css_class: str) -> None:
        super().__init__()
        self.css_class = css_class
        self.depth = 0  # > 0 inside the element
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            self.depth += tag not in VOID
        elif self.css_class in (dict(attrs).get("class") or "").split():
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in VOID:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text.append(data)


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def text_inside(dom: str, css_class: str) -> str:
    parser = Elements(css_class)
    parser.feed(dom)
    return " ".join(" ".join(parser.text).split())


# What only the rendered UI has: the element its code builds, holding the operations' summaries.
RENDERED = {
    "/docs": ("swagger-ui", ["Login Access Token", "Read User By Id", "Create Item", "Health Check"]),
    "/redoc": ("redoc-wrap", ["Test Project (0.1.0)", "Login Access Token", "Read User By Id", "Create Item"]),
}


@pytest.mark.needs("chromium")  # the only proof the docs render offline
@pytest.mark.parametrize("page", PAGES)
def test_a_browser_without_network_renders_the_docs(docs: Docs, page: str, tmp_path: Path) -> None:
    with RecordingProxy() as proxy:
        dom = rendered_dom(docs.url + page, proxy, tmp_path / "profile")
    css_class, texts = RENDERED[page]
    rendered = text_inside(dom, css_class)
    assert rendered, f"no element of class {css_class!r} in the DOM: the UI's script did not run\n{dom[:3000]}"
    for text in texts:
        assert text in rendered, (text, rendered[:3000])
    # Nothing was even tried elsewhere: neither the page nor its scripts asked another host for anything (ReDoc's
    # bundle would fetch its logo from cdn.redoc.ly: the docs' Content-Security-Policy keeps it from asking).
    asked = [request for request in proxy.requests if requested_host(request) not in BROWSER_OWN_HOSTS]
    assert asked == [], "\n".join(asked)


# What Chromium itself asks of Google's services whatever the page (clock, component updates, sign-in, autofill),
# despite --disable-background-networking. Exact names: any other host fails the test.
BROWSER_OWN_HOSTS = {
    "clients2.google.com",
    "update.googleapis.com",
    "accounts.google.com",
    "content-autofill.googleapis.com",
    "optimizationguide-pa.googleapis.com",
    "safebrowsingohttpgateway.googleapis.com",
}


def requested_host(request_line: str) -> str:
    """`CONNECT host:443 HTTP/1.1` or `GET http://host/path HTTP/1.1`: the host."""
    method, target, *_ = [*request_line.split(" "), "", ""]
    if method == "CONNECT":
        return target.rsplit(":", 1)[0]
    return urlsplit(target).hostname or target


def test_requested_host() -> None:
    assert requested_host("CONNECT cdn.redoc.ly:443 HTTP/1.1") == "cdn.redoc.ly"
    assert requested_host("GET http://fonts.googleapis.com/css?family=Roboto HTTP/1.1") == "fonts.googleapis.com"
