"""The HTML report: every query, named modes, colour bars, curves, map, rounded metrics.

Parsed with the standard library's html.parser, as a browser would see the structure.
"""

import re
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from skcfx import CounterfactualExplainer, ModalDirectionFinder
from skcfx.methods import DifCluE
from skcfx.report import save_report


class _Page(HTMLParser):
    """Collects images (alt, src), headings, the cards (id q<i>) and the text of table cells."""

    def __init__(self):
        super().__init__()
        self.images, self.headings, self.cards, self.cells, self.tags = [], [], [], [], []
        self._heading = None
        self._cell = None
        self._card = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append((attrs.get("alt", ""), attrs.get("src", ""), self._card))
        if tag in ("h1", "h2", "h3"):
            self._heading = ""
        if tag == "td":
            self._cell = ""
        if tag == "div" and re.fullmatch(r"q\d+", attrs.get("id", "")):
            self._card = int(attrs["id"][1:])
            self.cards.append(self._card)

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(self._heading.strip())
            self._heading = None
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data
        if self._cell is not None:
            self._cell += data


def _parse(path):
    parser = _Page()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def task(digits8):
    X, digits = digits8
    y = np.isin(digits, [1, 7]).astype(int)
    return X[:300], y[:300], digits[:300], X[300:400][y[300:400] == 0][:23]


@pytest.fixture(scope="module")
def fitted(task, fitted_tiny_encoder):
    X, y, _, queries = task
    clf = LogisticRegression(max_iter=1000).fit(X.reshape(len(X), -1), y)
    explainer = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=clf,
                                        direction_finder=ModalDirectionFinder(n_modes=2),
                                        method=DifCluE(max_decodes=2), random_state=0).fit(X, y)
    return explainer, explainer.explain(queries)


def test_report_shows_every_query_with_named_modes(fitted, task, tmp_path):
    explainer, e = fitted
    X, _, digits, _ = task
    paths = e.to_html(tmp_path / "report.html", explainer, X=X, fine_labels=digits,
                      label_names=lambda d: f"digit {d}", class_names=["other", "1 or 7"], queries_per_page=10,
                      n_curve_queries=4, metrics={"mode_recovery": {"ari": 0.981234, "nmi": 0.9}})
    assert [p.name for p in paths] == ["report.html", "report-queries-2.html", "report-queries-3.html"]
    pages = [_parse(p) for p in paths]
    index = pages[0]
    for section in ("Modes", "Metrics", "Importance curves", "Map of the latents", "All 23 queries"):
        assert section in index.headings
    # every query: one thumbnail on the main page, one card on exactly one page
    assert sum(alt.startswith("query ") and card is None for alt, _, card in index.images) == 23
    assert sorted(c for page in pages for c in page.cards) == list(range(23))
    # a card: the original, per mode a counterfactual and its difference map, one colour bar
    names = {m["mode"]: m["name"] for m in explainer.direction_finder_.describe_modes(digits, lambda d: f"digit {d}")}
    card = [(alt, src) for alt, src, c in index.images if c == 0]
    alts = [alt for alt, _ in card]
    assert alts.count("difference map") == 2 and alts.count("colour bar") == 1
    assert {f"counterfactual {names[m]}" for m in e.mode_ids[0]} <= set(alts)
    assert all(src.startswith("data:image/png;base64,") for _, src in card)
    assert any("mostly digit 1" in name for name in names.values())
    # metrics are rounded, each with a meaning
    values = index.cells[1::3]

    def significant_digits(number):
        return len(number.replace(",", "").replace(".", "").lstrip("0"))

    # at most 3 significant digits per number (0.0085 s is rounded; 0.12345 is not)
    assert all(significant_digits(n) <= 3 for v in values for n in re.findall(r"\d[\d,]*\.\d+", v)), values
    assert "ari: 0.98, nmi: 0.90" in values
    assert all(meaning for meaning in index.cells[2::3])
    assert index.tags.count("svg") == 2 and index.tags.count("polyline") > 4
    # the other pages link back and hold their own queries
    assert pages[1].cards == list(range(10, 20)) and "svg" not in pages[1].tags


def test_report_without_explainer_still_shows_all_queries(fitted, tmp_path):
    _, e = fitted
    e.save(tmp_path / "e.npz")
    loaded = type(e).load(tmp_path / "e.npz")
    [path] = save_report(tmp_path / "plain.html", loaded)
    page = _parse(path)
    assert sorted(page.cards) == list(range(e.n_queries))
    assert "Importance curves" not in page.headings and "svg" not in page.tags
    assert any(h.startswith("Query 0: the classifier says") for h in page.headings)


def test_report_rejects_bad_arguments(fitted, tmp_path):
    _, e = fitted
    with pytest.raises(ValueError, match="html"):
        save_report(tmp_path / "report.png", e)
    with pytest.raises(TypeError, match="explanation"):
        save_report(tmp_path / "r.html", {"images": e.images})
    with pytest.raises(ValueError, match="class_names"):
        save_report(tmp_path / "r.html", e, class_names=["just one"])
    with pytest.raises(ValueError, match="queries_per_page"):
        save_report(tmp_path / "r.html", e, queries_per_page=0)
    assert not (tmp_path / "r.html").exists()


def test_report_of_samples_and_of_several_targets(fitted, task, fitted_tiny_encoder, digits8, tmp_path):
    import dataclasses

    _, e = fitted
    # DiME-style: samples, no modes, no steps
    dime = dataclasses.replace(e, method="dime", mode_ids=np.full_like(e.mode_ids, -1),
                               alphas=np.full_like(e.alphas, np.nan))
    page = _parse(save_report(tmp_path / "dime.html", dime)[0])
    assert sorted(page.cards) == list(range(e.n_queries))
    assert "counterfactual sample 1" in [alt for alt, _, _ in page.images]
    # three classes: each query is explained towards the two classes it is not; the slots of its own
    # class's modes are empty and not drawn
    X, digits = digits8
    keep = np.isin(digits, [0, 1, 2])
    X3, y3 = X[keep][:240], digits[keep][:240]
    clf = LogisticRegression(max_iter=1000).fit(X3.reshape(len(X3), -1), y3)
    explainer = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=clf,
                                        direction_finder=ModalDirectionFinder(n_modes=1, random_state=0),
                                        method=DifCluE(alpha=0.5), random_state=0).fit(X3, y3)
    multi = explainer.explain(X[keep][240:244])
    page = _parse(multi.to_html(tmp_path / "multi.html", explainer, n_curve_queries=2)[0])
    drawn = [alt for alt, _, card in page.images if card == 0 and alt == "difference map"]
    assert len(drawn) == int((multi.cf_target_class[0] >= 0).sum()) == 2
    assert "Importance curves" in page.headings
