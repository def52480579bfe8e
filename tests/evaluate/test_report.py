import base64
import hashlib
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gyre.errors import EvaluationError
from gyre.evaluate._curves import classification_curves, regression_curves
from gyre.evaluate._report import MAX_SLICES, render_report, write_report

HOSTILE = "<script>alert(1)</script>"
VOID = {"meta", "img", "br", "hr", "link", "input"}


def interval(value: float) -> dict[str, float]:
    return {"value": value, "low": value - 0.01, "high": value + 0.01}


def classification(rows: int, slices: int = 20) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    y = rng.random(rows) < 0.3
    challenger = np.clip(rng.normal(0.3 + 0.35 * y, 0.2), 0.0, 1.0)
    champion = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0.0, 1.0)
    return {
        "title": "churn",
        "verdict": "vetoed",
        "reasons": ["slice country=FR: auc fell below the champion's", "p99 over budget"],
        "task": "classification",
        "models": {"challenger": f"{HOSTILE}@3", "champion": "churn $x$ 🚀@2"},
        "rows": rows,
        "threshold": {"challenger": 0.5, "champion": 0.45},
        "metrics": [
            {
                "metric": "auc",
                "challenger": interval(0.87),
                "champion": interval(0.85),
                "difference": {
                    "delta": 0.02,
                    "low": 0.01,
                    "high": 0.03,
                    "p_value": 1e-6,
                    "method": "paired bootstrap",
                },
            },
            {
                "metric": "log_loss",
                "challenger": interval(0.41),
                "champion": None,
                "difference": None,
            },
        ],
        "gates": [
            {"gate": "auc not worse", "passed": True, "detail": "+0.02"},
            {"gate": "slices", "passed": False, "detail": f"slice {HOSTILE}"},
        ],
        "curves": {
            "challenger": classification_curves(y, challenger, 0.5),
            "champion": classification_curves(y, champion, 0.45),
        },
        "slices": [
            {
                "slice": f"country=C{i}" if i else f"country={HOSTILE}",
                "rows": 1000 + i,
                "metric": "auc",
                "challenger": interval(0.8 + i / 500),
                "champion": interval(0.81 + i / 500),
                "gated": i % 2 == 0,
                "passed": i % 7 != 0,
            }
            for i in range(slices)
        ],
        "latency": {
            "p50_ms": 1.2,
            "p99_ms": 12.3,
            "rows_per_s_batch32": 45000.0,
            "file_bytes": 1_234_567,
        },
        "created_at": "2026-12-01T10:00:00Z",
    }


def regression(rows: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=rows)
    y = 3 * x + rng.standard_t(3, size=rows)
    return {
        "title": "eta",
        "verdict": "blessed",
        "reasons": ["rmse 0.05 below the champion's"],
        "task": "regression",
        "models": {"challenger": "eta@3", "champion": "eta@2"},
        "rows": rows,
        "metrics": [
            {
                "metric": "rmse",
                "challenger": interval(1.71),
                "champion": interval(1.76),
                "difference": {"delta": -0.05, "low": -0.06, "high": -0.04},
            }
        ],
        "curves": {
            "challenger": regression_curves(y, 3 * x + 0.1 * x**2),
            "champion": regression_curves(y, 2.7 * x),
        },
        "created_at": "2026-12-01T10:00:00Z",
    }


@pytest.fixture(scope="module")
def million() -> dict[str, str]:
    return {
        "classification": render_report(classification(1_000_000)),
        "regression": render_report(regression(1_000_000)),
    }


class Page(HTMLParser):
    """The page's images and text, and whether its elements nest properly."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.tags: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def png_size(png: bytes) -> tuple[int, int]:
    """The width and height in a PNG's IHDR chunk, after checking its signature and CRC."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind, data = int.from_bytes(png[8:12], "big"), png[12:16], png[16:29]
    assert length == 13 and kind == b"IHDR"
    assert int.from_bytes(png[29:33], "big") == zlib.crc32(kind + data)
    assert png[-8:-4] == b"IEND"
    return int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big")


def images(page: Page) -> list[bytes]:
    prefix = "data:image/png;base64,"
    sources = [str(image["src"]) for image in page.images]
    assert all(source.startswith(prefix) for source in sources)
    return [base64.b64decode(source[len(prefix) :], validate=True) for source in sources]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_report_parses_and_every_image_is_a_valid_png(
    million: dict[str, str], task: str
) -> None:
    page = Page(million[task])
    assert page.open == []
    assert page.tags[0] == "html" and "script" not in page.tags
    pngs = images(page)
    assert len(pngs) == (5 if task == "classification" else 2)
    for png, image in zip(pngs, page.images, strict=True):
        width, height = png_size(png)
        assert (str(width), str(height)) == (image["width"], image["height"])
        assert 200 <= width <= 1000 and 200 <= height <= 2000


@pytest.mark.parametrize(
    ("task", "build"), [("classification", classification), ("regression", regression)]
)
def test_the_report_stays_small_whatever_the_rows(
    million: dict[str, str], task: str, build: Any
) -> None:
    large = len(million[task].encode())
    small = len(render_report(build(10_000)).encode())
    assert large < 2_000_000
    # 100 times the rows, no bigger page: noisier curves of fewer rows compress a little worse.
    assert large <= small + 2_000
    assert abs(large - small) < 12_000


def test_hostile_names_are_escaped_and_drawn_literally(million: dict[str, str]) -> None:
    html = million["classification"]
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@3" in html
    page = Page(html)
    assert f"{HOSTILE}@3" in "".join(page.text)
    assert "script" not in page.tags


def test_the_verdict_and_its_reasons_come_before_the_first_image(
    million: dict[str, str],
) -> None:
    html = million["classification"]
    first_image = html.index("<img")
    assert html.index('class="verdict vetoed"') < first_image
    assert html.index("Vetoed: churn") < first_image
    assert html.index("p99 over budget") < first_image
    assert million["regression"].index("Blessed: eta") < million["regression"].index("<img")


def test_the_same_evaluation_renders_the_same_bytes() -> None:
    evaluation = classification(20_000)
    assert render_report(evaluation) == render_report(evaluation)


def test_the_page_fetches_nothing_and_runs_nothing(million: dict[str, str]) -> None:
    html = million["classification"]
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    page = Page(html)
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    assert "http://" not in html and "https://" not in html


def test_slices_past_the_limit_are_counted_and_failed_gates_shown_first() -> None:
    evaluation = classification(5_000, slices=80)
    html = render_report(evaluation)
    shown = html.split("<h2>Slices</h2>", 1)[1].split("<h2>Latency</h2>", 1)[0]
    failed = [s for s in evaluation["slices"] if s["gated"] and not s["passed"]]
    assert shown.count('class="fail"') == len(failed)
    rest = len(evaluation["slices"]) - MAX_SLICES
    assert f"{rest} more slices not shown: 0 failed their gate" in shown
    assert shown.count("<tr>") == MAX_SLICES + 1


def test_a_gated_slice_not_yet_decided_is_not_shown_as_failed() -> None:
    evaluation = classification(5_000, slices=MAX_SLICES + 5)
    for s in evaluation["slices"]:
        s["gated"], s["passed"] = True, None
    shown = render_report(evaluation).split("<h2>Slices</h2>", 1)[1]
    assert 'class="fail"' not in shown and shown.count("<td>—</td>") == MAX_SLICES
    assert "5 more slices not shown: 0 failed their gate, 0 passed it, 5 not gated" in shown


def test_a_report_without_a_champion_has_no_champion_columns() -> None:
    evaluation = classification(5_000)
    evaluation["models"]["champion"] = None
    evaluation["curves"]["champion"] = None
    for metric in evaluation["metrics"]:
        metric["champion"] = metric["difference"] = None
    for s in evaluation["slices"]:
        s["champion"] = None
    html = render_report(evaluation)
    assert "<th>champion</th>" not in html and "<th>difference</th>" not in html
    assert len(images(Page(html))) == 5


def test_a_report_with_only_the_verdict_renders() -> None:
    html = render_report(
        {"title": "t", "verdict": "blessed", "task": "regression", "models": {"challenger": "m@1"}}
    )
    page = Page(html)
    assert page.open == [] and page.images == []
    assert "Blessed: t" in html


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"verdict": "maybe"}, "expected 'blessed' or 'vetoed'"),
        ({"task": "ranking"}, "expected 'classification' or 'regression'"),
        ({"models": {"champion": "m@1"}}, "needs a `challenger`"),
        ({"gates": "all passed"}, r"evaluation\['gates'\] is a list"),
    ],
)
def test_a_malformed_evaluation_is_refused(change: dict[str, Any], match: str) -> None:
    evaluation = {
        "title": "t",
        "verdict": "blessed",
        "task": "regression",
        "models": {"challenger": "m@1"},
    } | change
    with pytest.raises(EvaluationError, match=match):
        render_report(evaluation)


def test_write_report_writes_the_page_and_returns_its_sha256(tmp_path: Path) -> None:
    evaluation = regression(5_000)
    path = tmp_path / "reports" / "eta-3.html"
    digest = write_report(evaluation, path)
    data = path.read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()
    assert data.decode() == render_report(evaluation)
    assert [p.name for p in path.parent.iterdir()] == ["eta-3.html"]


def test_a_report_that_cannot_be_written_names_its_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(
        EvaluationError, match=r"cannot write the evaluation report to .*file/r\.html"
    ):
        write_report(regression(1_000), blocker / "r.html")
