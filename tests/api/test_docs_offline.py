"""`/docs` works without internet: the Swagger UI page references only the server's own URLs, and every
script, stylesheet and icon it names is served by the server, with content (api.docs)."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx


class References(HTMLParser):
    """Every <script src> and <link href> of a page, and the URLs named in inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []
        self.inline = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self._in_script = True
            if values.get("src"):
                self.scripts.append(str(values["src"]))
        if tag == "link" and values.get("href"):
            self.links.append(str(values["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline += data


async def test_docs_page_and_every_asset_come_from_the_server(client: httpx.AsyncClient) -> None:
    anonymous = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))  # no token
    async with anonymous:
        page = await anonymous.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        refs = References()
        refs.feed(page.text)
        assert refs.scripts, page.text  # the Swagger UI bundle
        assert any(href.endswith(".css") for href in refs.links), page.text
        assert "cdn" not in page.text.lower() and "://" not in page.text.replace("http://www.w3.org", "")
        for url in [*refs.scripts, *refs.links]:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{url}: not the server's own URL"
            asset = await anonymous.get(url)
            assert asset.status_code == 200, (url, asset.status_code)
            assert len(asset.content) > 1000, (url, len(asset.content))
        bundle = await anonymous.get(refs.scripts[0])
        assert b"SwaggerUIBundle" in bundle.content
        assert "'/openapi.json'" in refs.inline or '"/openapi.json"' in refs.inline
        schema = await anonymous.get("/openapi.json")
        assert schema.status_code == 200 and schema.json()["info"]["title"] == "rollwise"
        assert (await anonymous.get("/docs/assets/../app.py")).status_code == 404
