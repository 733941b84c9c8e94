"""leaderboard.html: every section of the markdown, self-contained, figures embedded, tables
that a browser can sort (parsed with the standard library; a real headless browser when one is
installed)."""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess

import pytest

import reports
from reports import records as rec
from reports.html import headings, inline, markdown_to_html


def synthetic_records() -> list[dict]:
    """Two tasks x two levels x three seeds of three measures (one name needs escaping)."""
    out = [rec.meta_record(run={"date": "2026-01-01 00:00 UTC", "mode": "quick"})]
    shapes = {"good": [0.0, 0.1, 1.0], "random": [0.0, 0.6, 1.0], "bad|pipe_x": [0.0, 0.9, 1.0]}
    for task in ("toy", "toy_two"):
        for level in ("weight", "unit"):
            for seed in range(3):
                for measure, shape in shapes.items():
                    for p, inc in zip((0.0, 0.5, 1.0), shape, strict=True):
                        inc = min(1.0, inc + (0.01 * seed if 0 < p < 1 else 0.0))
                        out.append(rec.point_record(
                            measure=measure, task=task, variant="", level=level,
                            scope="global", replace="noise", seed=seed, threshold=p,
                            loss=0.2 + inc * 2.1, accuracy=0.95 - 0.85 * inc,
                            fraction_replaced=p, num_classes=10, base_loss=0.2,
                            base_accuracy=0.95))
    return out


class Page(html.parser.HTMLParser):
    """Collects headings, tables, image sources, links and script sources of a page."""

    def __init__(self):
        super().__init__()
        self.headings: list[str] = []
        self.tables = 0
        self.images: list[str] = []
        self.urls: list[str] = []
        self._heading: list[str] | None = None
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in ("img", "meta", "br"):
            self.open.append(tag)
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = []
        if tag == "table":
            self.tables += 1
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.urls.append(attrs[key])

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)


def _parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert page.open == [], f"unclosed tags: {page.open}"
    return page


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    paths = reports.write_reports(synthetic_records(), out)
    return paths, out


def test_the_page_has_every_section_of_the_markdown(written):
    paths, out = written
    markdown = paths["leaderboard"].read_text()
    page = _parse(paths["html"].read_text())
    expected = [re.sub(r"\\(.)", r"\1", h) for h in headings(markdown)]
    assert expected and page.headings == expected
    assert page.tables == markdown.count("\n| ---") + markdown.count("\n| :---")


def test_the_page_is_self_contained(written):
    paths, _ = written
    text = paths["html"].read_text()
    page = _parse(text)
    assert len(page.images) == len(paths["plots"]) > 0
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(url.startswith("#") for url in page.urls), page.urls
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", text)


def test_inline_markdown_is_escaped_and_converted():
    assert inline(r"fisher\_sampled **bold** `a<b` 3 \* x") == (
        "fisher_sampled <strong>bold</strong> <code>a&lt;b</code> 3 * x")
    assert inline("<script>") == "&lt;script&gt;"
    assert inline("[out](https://example.org)") == "out (https://example.org)"
    table = markdown_to_html("| a | b |\n| --- | ---: |\n| x \\| y | 2 |")
    assert '<td>x | y</td><td class="r">2</td>' in table


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="no headless chromium on this machine (apt-get install chromium)")
def test_a_real_browser_renders_and_sorts_the_tables(written, tmp_path):
    paths, _ = written
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    probe = tmp_path / "probe.html"
    # Click the first sortable header twice and dump the DOM: the script must run without error.
    probe.write_text(paths["html"].read_text().replace(
        "</body>", "<script>var th=document.querySelector('th');th.click();th.click();"
        "document.body.dataset.sorted=th.dataset.order;</script></body>"))
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'data-sorted="desc"' in result.stdout
    assert "<table>" in result.stdout
