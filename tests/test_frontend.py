"""The built frontend at `/` (FRONTEND_DIR), answered path by path as the template's backend answers it with FastAPI's
`app.frontend("/", directory=...)` (measured on fastapi 0.165 with a build like the one below), plus our caching and
compression. Served over HTTP by the real app; the API answers as without a frontend."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from tests.conftest import LiveServer, make_settings

HASHED_JS = "/assets/index-BZ3x7Q1a.js"
HASHED_CSS = "/assets/index-Dk2p_9xQ.css"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"  # what a navigation sends
AXIOS = "application/json, text/plain, */*"  # what the frontend's API client sends
INDEX = (
    "<!doctype html><html><head><title>App</title></head><body><div id=root></div>" + "<!-- -->" * 80 + "</body></html>"
)
PAGE_404 = "<!doctype html><html><body>Nothing here</body></html>"
GUIDE = "<!doctype html><html><body>Guide</body></html>"
JS = "export const answer = 42;\n" * 200
CSS = "body { margin: 0 }\n" * 100
ICON = b"\x00\x00\x01\x00" + bytes(range(256)) * 4
NOT_FOUND = {"detail": "Not Found"}
NOT_ALLOWED = {"detail": "Method Not Allowed"}


def build(root: Path, *, with_404: bool) -> Path:
    """A Vite build as the template's frontend makes it: index.html, hashed assets (the CSS with its precompressed
    siblings), a favicon, and a folder with a page of its own."""
    (root / "assets").mkdir(parents=True)
    (root / "guide").mkdir()
    (root / "index.html").write_text(INDEX)
    if with_404:
        (root / "404.html").write_text(PAGE_404)
    (root / HASHED_JS.lstrip("/")).write_text(JS)
    css = root / HASHED_CSS.lstrip("/")
    css.write_text(CSS)
    css.with_name(css.name + ".gz").write_bytes(gzip.compress(CSS.encode()))
    css.with_name(css.name + ".br").write_bytes(b"brotli bytes of the css")  # read back raw, never decoded
    (root / "favicon.ico").write_bytes(ICON)
    (root / "robots.txt").write_text("User-agent: *\n")  # text, but too small to compress
    (root / "guide" / "index.html").write_text(GUIDE)
    return root


@dataclass
class Site:
    url: str
    root: Path

    def client(self, **headers: str) -> httpx.Client:
        # No Accept-Encoding unless a test asks: the answers are then the files' own bytes.
        return httpx.Client(base_url=self.url, headers={"accept-encoding": "identity", **headers}, timeout=30)


def serve(tmp: Path, frontend: Path | None) -> Iterator[Site]:
    overrides = {"FRONTEND_DIR": str(frontend)} if frontend else {}
    settings = make_settings(f"sqlite+aiosqlite:///{tmp / 'app.db'}", **overrides)
    if frontend is None and settings.frontend_dir is not None:
        pytest.skip("app/frontend is there: the app serves it without FRONTEND_DIR")
    with LiveServer(create_app(settings)) as server:
        yield Site(server.url, frontend or tmp)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A build without 404.html: missing paths fall back to index.html for a browser's navigation."""
    tmp = tmp_path_factory.mktemp("spa")
    yield from serve(tmp, build(tmp / "dist", with_404=False))


@pytest.fixture(scope="module")
def site_404(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A build with 404.html: it answers every missing path."""
    tmp = tmp_path_factory.mktemp("static")
    yield from serve(tmp, build(tmp / "dist", with_404=True))


@pytest.fixture(scope="module")
def no_frontend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from serve(tmp_path_factory.mktemp("api-only"), None)


def body_of(response: httpx.Response) -> object:
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


# --------------------------------------------------------------------------------------------- what FastAPI answers

# (method, path, Accept, status, body): FastAPI's answers for a build without 404.html.
SPA_TABLE = [
    ("GET", "/", None, 200, INDEX),
    ("GET", "/index.html", None, 200, INDEX),
    ("GET", "/index.html/", None, 200, INDEX),
    ("GET", HASHED_JS, None, 200, JS),
    ("GET", "/guide/", None, 200, GUIDE),
    ("GET", "/guide/index.html", None, 200, GUIDE),
    # Deep links of the single-page app: its page to a browser's navigation, the JSON 404 to anything else.
    ("GET", "/items", BROWSER, 200, INDEX),
    ("GET", "/settings/profile", "text/html", 200, INDEX),
    ("GET", "/items", "application/xhtml+xml", 200, INDEX),
    ("GET", "/items", None, 404, NOT_FOUND),
    ("GET", "/items", AXIOS, 404, NOT_FOUND),
    ("GET", "/items", "*/*", 404, NOT_FOUND),
    ("GET", "/items", "text/html;q=0", 404, NOT_FOUND),
    # A path under the API that no route has: the same (FastAPI's frontend is behind every route, not beside them).
    ("GET", "/api/v1/nope", BROWSER, 200, INDEX),
    ("GET", "/api/v1/nope", None, 404, NOT_FOUND),
    ("GET", "/api/v1/items/x/y", AXIOS, 404, NOT_FOUND),
    ("GET", "/api", BROWSER, 200, INDEX),
    ("GET", "/assets/missing-AAAAAAAA.js", None, 404, NOT_FOUND),
    ("GET", "/assets/missing-AAAAAAAA.js", BROWSER, 200, INDEX),
    ("GET", "/assets", None, 404, NOT_FOUND),  # a folder without index.html
    ("GET", "/assets/", BROWSER, 200, INDEX),
    # Paths that are no file: through a file, too long for the file system, out of the build.
    ("GET", "/index.html/x", None, 404, NOT_FOUND),
    ("GET", "/" + "a" * 300, None, 404, NOT_FOUND),
    ("GET", "/%2e%2e/app.db", None, 404, NOT_FOUND),
    ("GET", "/assets/%2e%2e/%2e%2e/app.db", BROWSER, 200, INDEX),
    # Other methods: 405 where a GET finds a file, else 404; never the fallback page.
    ("POST", "/", None, 405, NOT_ALLOWED),
    ("PUT", "/index.html", None, 405, NOT_ALLOWED),
    ("DELETE", HASHED_JS, None, 405, NOT_ALLOWED),
    ("PATCH", "/guide", None, 405, NOT_ALLOWED),
    ("OPTIONS", "/", None, 405, NOT_ALLOWED),
    ("POST", "/items", None, 404, NOT_FOUND),
    ("POST", "/items", BROWSER, 404, NOT_FOUND),
    ("OPTIONS", "/items", None, 404, NOT_FOUND),
    ("POST", "/api/v1/nope", BROWSER, 404, NOT_FOUND),
]


@pytest.mark.parametrize(("method", "path", "accept", "status", "body"), SPA_TABLE)
def test_a_build_without_404_page(
    site: Site, method: str, path: str, accept: str | None, status: int, body: object
) -> None:
    with site.client(**({"accept": accept} if accept else {})) as http:
        response = http.request(method, path)
    assert (response.status_code, body_of(response)) == (status, body)
    if status == 405:
        assert response.headers["allow"] == "GET, HEAD"  # FastAPI sends none; RFC 9110 wants it


# FastAPI's answers where the build has a 404.html: it answers every missing path of a GET, whatever the Accept.
STATIC_TABLE = [
    ("GET", "/", None, 200, INDEX),
    ("GET", HASHED_JS, None, 200, JS),
    ("GET", "/items", None, 404, PAGE_404),
    ("GET", "/items", BROWSER, 404, PAGE_404),
    ("GET", "/settings/profile", AXIOS, 404, PAGE_404),
    ("GET", "/api/v1/nope", None, 404, PAGE_404),
    ("GET", "/api/v1/nope", BROWSER, 404, PAGE_404),
    ("GET", "/assets/missing-AAAAAAAA.js", None, 404, PAGE_404),
    ("GET", "/index.html/x", None, 404, PAGE_404),
    ("POST", "/items", BROWSER, 404, NOT_FOUND),
    ("POST", "/", None, 405, NOT_ALLOWED),
]


@pytest.mark.parametrize(("method", "path", "accept", "status", "body"), STATIC_TABLE)
def test_a_build_with_404_page(
    site_404: Site, method: str, path: str, accept: str | None, status: int, body: object
) -> None:
    with site_404.client(**({"accept": accept} if accept else {})) as http:
        response = http.request(method, path)
    assert (response.status_code, body_of(response)) == (status, body)


def test_head_answers_as_get_without_the_body(site: Site, site_404: Site) -> None:
    for served, path, accept in [
        (site, "/", None),
        (site, HASHED_JS, None),
        (site, "/favicon.ico", None),
        (site, "/items", BROWSER),
        (site_404, "/items", None),
    ]:
        with served.client(**({"accept": accept} if accept else {})) as http:
            get, head = http.get(path), http.head(path)
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
        for name in ("content-type", "content-length", "etag", "last-modified", "cache-control", "vary"):
            assert head.headers.get(name) == get.headers.get(name), (path, name)


def test_files_carry_their_type_and_validators(site: Site) -> None:
    with site.client() as http:
        page, script, icon = http.get("/"), http.get(HASHED_JS), http.get("/favicon.ico")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert icon.content == ICON
    for response in (page, script, icon):
        assert response.headers["etag"].startswith('"')
        assert response.headers["last-modified"].endswith(" GMT")
        assert "content-disposition" not in response.headers


def test_a_folder_without_its_slash_is_redirected_to_it(site: Site) -> None:
    """So that its page's relative links resolve inside it (FastAPI: 307 to the absolute URL, query kept)."""
    with site.client() as http:
        response = http.get("/guide?tab=1")
        head = http.head("/guide")
    assert response.status_code == 307
    assert response.headers["location"] == f"{site.url}/guide/?tab=1"
    assert head.status_code == 307


# --------------------------------------------------------------------------------------------- conditional requests


def test_if_none_match_and_if_modified_since_answer_304(site: Site) -> None:
    with site.client() as http:
        first = http.get("/")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        by_etag = http.get("/", headers={"if-none-match": etag})
        by_date = http.get("/", headers={"if-modified-since": modified})
        in_a_list = http.get("/", headers={"if-none-match": f'"other", W/{etag}'})
        anything = http.get("/", headers={"if-none-match": "*"})
        # If-None-Match decides when sent: a stale tag gets the page even if the date would match.
        stale = http.get("/", headers={"if-none-match": '"other"', "if-modified-since": modified})
        older = http.get("/", headers={"if-modified-since": "Mon, 01 Jan 2001 00:00:00 GMT"})
        head = http.head("/", headers={"if-none-match": etag})
    for response in (by_etag, by_date, in_a_list, anything, head):
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"] == "no-cache"
        assert "content-type" not in response.headers
    assert (stale.status_code, stale.text) == (200, INDEX)
    assert (older.status_code, older.text) == (200, INDEX)


def test_the_fallback_page_is_revalidated_too(site: Site, site_404: Site) -> None:
    with site.client(accept=BROWSER) as http:
        etag = http.get("/items").headers["etag"]
        assert etag == http.get("/").headers["etag"]  # it is index.html
        assert http.get("/settings/profile", headers={"if-none-match": etag}).status_code == 304
    with site_404.client() as http:
        missing = http.get("/items")
        # A 404 stays a 404 (RFC 9110 13.2.1; FastAPI's Starlette answers 304 here).
        again = http.get("/items", headers={"if-none-match": missing.headers["etag"]})
    assert (again.status_code, again.text) == (404, PAGE_404)


# --------------------------------------------------------------------------------------------- caching


def test_hashed_assets_are_immutable_pages_are_revalidated(site: Site, site_404: Site) -> None:
    with site.client() as http:
        assert http.get(HASHED_JS).headers["cache-control"] == "public, max-age=31536000, immutable"
        assert http.get(HASHED_CSS).headers["cache-control"] == "public, max-age=31536000, immutable"
        assert http.get("/").headers["cache-control"] == "no-cache"
        assert http.get("/index.html").headers["cache-control"] == "no-cache"
        assert http.get("/guide/").headers["cache-control"] == "no-cache"
        assert http.get("/items", headers={"accept": BROWSER}).headers["cache-control"] == "no-cache"
        # A hashed name that is not there answers the page, which must not be kept for a year.
        missing = http.get("/assets/missing-AAAAAAAA.js", headers={"accept": BROWSER})
        assert (missing.status_code, missing.headers["cache-control"]) == (200, "no-cache")
        # Names without a hash may change under the same name: left to the validators.
        assert "cache-control" not in http.get("/favicon.ico").headers
        assert "cache-control" not in http.get("/robots.txt").headers
    with site_404.client() as http:
        assert http.get("/items").headers["cache-control"] == "no-cache"


# --------------------------------------------------------------------------------------------- compression


def raw(http: httpx.Client, method: str, path: str, **headers: str) -> tuple[httpx.Response, bytes]:
    """The answer and its body as sent (httpx would otherwise decode it)."""
    with http.stream(method, path, headers=headers) as response:
        return response, b"".join(response.iter_raw())


def test_text_is_gzipped_on_the_fly_for_a_client_that_accepts_it(site: Site) -> None:
    with site.client() as http:
        plain_etag = http.get(HASHED_JS).headers["etag"]
        response, body = raw(http, "GET", HASHED_JS, **{"accept-encoding": "gzip, deflate"})
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["vary"] == "Accept-Encoding"
        assert "content-length" not in response.headers or int(response.headers["content-length"]) == len(body)
        assert gzip.decompress(body).decode() == JS
        assert len(body) < len(JS) / 10
        # Other bytes than the file's: a weak validator, which still revalidates the gzipped copy.
        assert response.headers["etag"] == f"W/{plain_etag}"
        again = http.get(HASHED_JS, headers={"accept-encoding": "gzip", "if-none-match": response.headers["etag"]})
        assert again.status_code == 304
        head, head_body = raw(http, "HEAD", HASHED_JS, **{"accept-encoding": "gzip"})
        assert (head.status_code, head.headers["content-encoding"], head_body) == (200, "gzip", b"")
        # The SPA's page as the fallback of a deep link, too.
        page, page_body = raw(http, "GET", "/items", accept=BROWSER, **{"accept-encoding": "gzip"})
        assert (page.status_code, page.headers["content-encoding"]) == (200, "gzip")
        assert gzip.decompress(page_body).decode() == INDEX


def test_what_is_not_compressed(site: Site) -> None:
    with site.client() as http:
        for path, vary in [("/favicon.ico", None), ("/robots.txt", "Accept-Encoding")]:  # an image; a tiny text
            response, body = raw(http, "GET", path, **{"accept-encoding": "gzip, br"})
            assert "content-encoding" not in response.headers, path
            assert response.headers.get("vary") == vary, path
        response, body = raw(http, "GET", HASHED_JS, **{"accept-encoding": "gzip;q=0, br;q=0"})
        assert ("content-encoding" not in response.headers, body.decode()) == (True, JS)
        response, body = raw(http, "GET", HASHED_JS)  # identity
        assert ("content-encoding" not in response.headers, response.headers["vary"]) == (True, "Accept-Encoding")
        assert body.decode() == JS


def test_the_builds_precompressed_files_are_preferred(site: Site) -> None:
    css = site.root / HASHED_CSS.lstrip("/")
    with site.client() as http:
        br, br_body = raw(http, "GET", HASHED_CSS, **{"accept-encoding": "gzip, deflate, br"})
        gz, gz_body = raw(http, "GET", HASHED_CSS, **{"accept-encoding": "gzip"})
        star, star_body = raw(http, "GET", HASHED_CSS, **{"accept-encoding": "*"})
        plain, plain_body = raw(http, "GET", HASHED_CSS)
        head, head_body = raw(http, "HEAD", HASHED_CSS, **{"accept-encoding": "br"})
        revalidated = http.get(HASHED_CSS, headers={"accept-encoding": "br", "if-none-match": br.headers["etag"]})
    assert (br.headers["content-encoding"], br_body) == ("br", css.with_name(css.name + ".br").read_bytes())
    assert (gz.headers["content-encoding"], gz_body) == ("gzip", css.with_name(css.name + ".gz").read_bytes())
    assert (star.headers["content-encoding"], star_body) == ("br", br_body)
    assert ("content-encoding" not in plain.headers, plain_body.decode()) == (True, CSS)
    for response in (br, gz, plain, head):
        assert response.headers["content-type"] == "text/css; charset=utf-8"
        assert response.headers["vary"] == "Accept-Encoding"
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert int(br.headers["content-length"]) == len(br_body)
    assert (head.headers["content-encoding"], head.headers["content-length"], head_body) == (
        "br",
        br.headers["content-length"],
        b"",
    )
    assert len({br.headers["etag"], gz.headers["etag"], plain.headers["etag"]}) == 3  # three representations
    assert revalidated.status_code == 304


# --------------------------------------------------------------------------------------------- the API wins


def test_the_api_answers_as_without_a_frontend(site: Site, site_404: Site) -> None:
    for served in (site, site_404):
        with served.client(accept=BROWSER) as http:
            for path in ("/api/v1/utils/health-check/", "/api/v1/utils/health-check"):
                response = http.get(path)
                assert (response.status_code, response.json()) == (200, True)
            me = http.get("/api/v1/users/me")
            assert (me.status_code, me.json()) == (401, {"detail": "Not authenticated"})
            assert me.headers["www-authenticate"] == "Bearer"
            for path in ("/api/v1/login/access-token", "/api/v1/login/access-token/"):
                response = http.get(path)
                assert (response.status_code, response.json(), response.headers["allow"]) == (
                    405,
                    NOT_ALLOWED,
                    "OPTIONS, POST",
                )
                options = http.options(path)
                assert (options.status_code, options.headers["allow"]) == (204, "OPTIONS, POST")
            login = http.post("/api/v1/login/access-token", data={"username": "x@example.com"})
            assert login.status_code == 422
            assert http.get("/docs").text.lower().startswith("<!doctype html>")
            assert http.get("/redoc").status_code == 200
            document = http.get("/api/v1/openapi.json")
            assert document.status_code == 200
            assert all(path.startswith("/api/v1/") for path in document.json()["paths"])


def test_metrics_still_win(tmp_path: Path) -> None:
    dist = build(tmp_path / "dist", with_404=True)
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        FRONTEND_DIR=str(dist),
        METRICS_ENABLED="true",
        METRICS_DIR=str(tmp_path / "metrics"),
    )
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url) as http:
        metrics = http.get("/metrics", headers={"accept": BROWSER})
        page = http.get("/")
    assert metrics.status_code == 200
    assert "# TYPE" in metrics.text
    assert (page.status_code, page.text) == (200, INDEX)


def test_without_a_frontend_unknown_paths_answer_as_before(no_frontend: Site) -> None:
    with no_frontend.client(accept=BROWSER) as http:
        for method, path in [("GET", "/"), ("GET", "/items"), ("HEAD", "/items"), ("GET", "/api/v1/nope")]:
            response = http.request(method, path)
            assert response.status_code == 404, path
            if method == "GET":
                assert response.json() == NOT_FOUND
        response = http.post("/")
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
