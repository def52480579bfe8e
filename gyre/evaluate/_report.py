"""The evaluation report: one self-contained HTML file, the verdict first.

`render_report(evaluation)` turns an evaluation, a JSON-like mapping, into the page's
text; `write_report(evaluation, path)` writes it and returns its sha256. The mapping:

    {"title": str,                                  required
     "verdict": "blessed" | "vetoed",               required
     "reasons": [str, ...],
     "task": "classification" | "regression",       required
     "models": {"challenger": "name@3", "champion": "name@2" | None},   challenger required
     "rows": int,
     "threshold": {"challenger": float, "champion": float} | None,
     "metrics": [{"metric": str,
                  "challenger": {"value": float, "low": float, "high": float},
                  "champion": {"value", "low", "high"} | None,
                  "difference": {"delta", "low", "high", "p_value", "method"} | None}],
     "gates": [{"gate": str, "passed": bool, "detail": str}],
     "curves": {"challenger": CURVES, "champion": CURVES | None} | None,
     "slices": [{"slice": "country=FR", "rows": int, "metric": str,
                 "challenger": {"value", "low", "high"}, "champion": {...} | None,
                 "gated": bool, "passed": bool | None}],
     "latency": {"p50_ms": float, "p99_ms": float, "rows_per_s_batch32": float,
                 "file_bytes": int, ...} | None,
     "data": str | None,                            the rows file (None: the run's holdout)
     "leave_one_out": {"metric": str, "features": {name: {"delta", "low", "high",
                       "p_value", ...}}, "skipped": [str]} | None,
     "created_at": str}

where CURVES is `_curves.classification_curves`' dict (`roc`, `pr`, `calibration`,
`confusion`) or `_curves.regression_curves`' (`residuals`, `residual_vs_predicted`); a
missing entry leaves its plot out. Any value of an interval may be None (not computed).

The page, in order: a coloured banner with the verdict and its reasons; the models; the
metrics table (challenger and champion with their intervals, the difference with its
interval, p-value and method); the gates; the plots (ROC with both models and their
operating points, precision-recall, calibration, confusion matrices side by side; or the
residual histogram and residuals against predictions); per-slice bars with interval error
bars and their table; leave-one-feature-out differences; latency.

Rules:
- Self-contained and inert: plots are PNGs in `data:` URIs, the CSS is in the page, there
  is no JavaScript, and a Content-Security-Policy forbids scripts and anything fetched.
- Every string from the evaluation is HTML-escaped (a model may be named
  `<script>alert(1)</script>`) and drawn literally in the plots.
- Small whatever the data size: the page holds summaries, never rows; curves are bounded
  by `_curves` (and thinned again if longer), at most `MAX_SLICES` slices are drawn and
  tabled, those failing a gate first, the rest counted.
- Deterministic: the same evaluation gives the same bytes (no clock read, PNGs without
  dates or software tags).
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from gyre.errors import EvaluationError

MAX_SLICES = 30
_MODELS = ("challenger", "champion")

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:1100px;margin:0 auto;padding:16px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd}
.verdict{padding:14px 18px;border-radius:6px;color:#fff}
.blessed{background:#1e7d45}.vetoed{background:#b3261e}
.verdict ul{margin:6px 0 0;padding-left:20px}
table{border-collapse:collapse;margin:4px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ci{color:#666;font-size:12px}.pass{color:#1e7d45}.fail{color:#b3261e;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}img{max-width:100%;height:auto}
figcaption{font-size:12px;color:#555}footer{margin-top:28px;color:#777;font-size:12px}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_report(evaluation: Mapping[str, Any]) -> str:
    """The report's HTML for `evaluation` (the mapping in the module docstring)."""
    e = _checked(evaluation)
    title = _text(e["title"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<title>{title}: {_text(e['verdict'])}</title><style>{_CSS}</style></head><body>",
        _banner(e, title),
        _models(e),
        _metrics(e),
        _gates(e),
        _curves(e),
        _slices(e),
        _leave_one_out(e),
        _latency(e),
        f"<footer>gyre evaluation report · {_text(e.get('created_at') or '')}</footer>",
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def write_report(evaluation: Mapping[str, Any], path: Path) -> str:
    """Render `evaluation` and write it to `path` (made whole or not at all: written to a
    temporary file beside it, then renamed); the sha256 hex of the bytes written."""
    data = render_report(evaluation).encode("utf-8")
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise EvaluationError(
            f"cannot write the evaluation report to {path}: {exc.strerror or exc}; "
            "choose a path in a folder you can write"
        ) from None
    return hashlib.sha256(data).hexdigest()


def _checked(evaluation: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(evaluation, Mapping):
        raise EvaluationError(f"an evaluation is a mapping, not {type(evaluation).__name__}")
    for key in ("title", "verdict", "task", "models"):
        if key not in evaluation:
            raise EvaluationError(f"the evaluation has no `{key}`; see gyre.evaluate._report")
    if evaluation["verdict"] not in ("blessed", "vetoed"):
        raise EvaluationError(
            f"evaluation['verdict'] is {evaluation['verdict']!r}; expected 'blessed' or 'vetoed'"
        )
    if evaluation["task"] not in ("classification", "regression"):
        raise EvaluationError(
            f"evaluation['task'] is {evaluation['task']!r}; "
            "expected 'classification' or 'regression'"
        )
    models = evaluation["models"]
    if not isinstance(models, Mapping) or not isinstance(models.get("challenger"), str):
        raise EvaluationError("evaluation['models'] needs a `challenger` name, as 'name@3'")
    for key in ("reasons", "metrics", "gates", "slices"):
        value = evaluation.get(key) or []
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise EvaluationError(f"evaluation[{key!r}] is a list, not {type(value).__name__}")
    return evaluation


def _banner(e: Mapping[str, Any], title: str) -> str:
    verdict = e["verdict"]
    reasons = "".join(f"<li>{_text(reason)}</li>" for reason in e.get("reasons") or [])
    return (
        f'<header class="verdict {verdict}"><h1>{verdict.capitalize()}: {title}</h1>'
        + (f"<ul>{reasons}</ul>" if reasons else "")
        + "</header>"
    )


def _models(e: Mapping[str, Any]) -> str:
    models, threshold = e["models"], e.get("threshold") or {}
    rows = [("task", _text(e["task"]))]
    for role in _MODELS:
        if models.get(role) is not None:
            at = threshold.get(role)
            shown = f" (threshold {_number(at)})" if at is not None else ""
            rows.append((role, f"{_text(models[role])}{shown}"))
    if e.get("rows") is not None:
        rows.append(("rows evaluated", _number(e["rows"])))
    rows.append(("rows from", _text(e.get("data") or "the run's holdout")))
    return "<h2>Models</h2>" + _table([], [[f"<th>{k}</th>", f"<td>{v}</td>"] for k, v in rows])


def _metrics(e: Mapping[str, Any]) -> str:
    metrics = e.get("metrics") or []
    if not metrics:
        return ""
    champion = e["models"].get("champion") is not None
    head = ["metric", "challenger"] + (
        ["champion", "difference", "p", "method"] if champion else []
    )
    body = []
    for m in metrics:
        row = [f"<td>{_text(m.get('metric'))}</td>", _interval_cell(m.get("challenger"))]
        if champion:
            d = m.get("difference") or {}
            row += [
                _interval_cell(m.get("champion")),
                _interval_cell(
                    {"value": d.get("delta"), "low": d.get("low"), "high": d.get("high")},
                    signed=True,
                ),
                f'<td class="n">{_p(d.get("p_value"))}</td>',
                f"<td>{_text(d.get('method') or '')}</td>",
            ]
        body.append(row)
    return "<h2>Metrics</h2>" + _table(head, body)


def _gates(e: Mapping[str, Any]) -> str:
    gates = e.get("gates") or []
    if not gates:
        return ""
    body = [
        [
            f"<td>{_text(g.get('gate'))}</td>",
            _passed(g.get("passed")),
            f"<td>{_text(g.get('detail') or '')}</td>",
        ]
        for g in gates
    ]
    return "<h2>Gates</h2>" + _table(["gate", "result", "detail"], body)


def _curves(e: Mapping[str, Any]) -> str:
    from gyre.evaluate import _plots

    curves = e.get("curves") or {}
    models = e["models"]
    present = [
        (f"{role} {models.get(role)}", curves[role])
        for role in _MODELS
        if isinstance(curves.get(role), Mapping)
    ]
    if not present:
        return ""

    def series(key: str) -> list[tuple[str, Mapping[str, Any]]]:
        return [(name, c) for name, c in present if isinstance(c.get(key), Mapping)]

    def drawn(key: str) -> list[tuple[str, Mapping[str, Any]]]:
        return [(name, c[key]) for name, c in series(key)]

    def operating(key: str) -> list[tuple[float, float] | None]:
        return [_operating(c.get("confusion"), key) for _, c in series(key)]

    figures = []
    if e["task"] == "classification":
        if series("roc"):
            figures.append(("ROC curve", _plots.roc_plot(drawn("roc"), operating("roc"))))
        if series("pr"):
            figures.append(("Precision-recall curve", _plots.pr_plot(drawn("pr"), operating("pr"))))
        if series("calibration"):
            figures.append(("Calibration", _plots.calibration_plot(drawn("calibration"))))
        if series("confusion"):
            figures.append(("Confusion matrices", _plots.confusion_plot(drawn("confusion"))))
    else:
        if series("residuals"):
            figures.append(
                ("Residual histogram", _plots.residual_histogram_plot(drawn("residuals")))
            )
        if series("residual_vs_predicted"):
            png = _plots.residual_vs_predicted_plot(drawn("residual_vs_predicted"))
            figures.append(("Residuals against predictions", png))
    return (
        '<h2>Curves</h2><div class="plots">'
        + "".join(_image(png, alt) for alt, png in figures)
        + "</div>"
    )


def _slices(e: Mapping[str, Any]) -> str:
    from gyre.evaluate import _plots

    slices = list(e.get("slices") or [])
    if not slices:
        return ""
    # Failed gates first, then passed gates, then the rest; the largest slices first.
    order = sorted(slices, key=lambda s: (_rank(s), -_count(s.get("rows"))))
    shown, rest = order[:MAX_SLICES], order[MAX_SLICES:]
    metrics = {str(s.get("metric")) for s in shown}
    names = [
        str(s.get("slice")) + ("" if len(metrics) == 1 else f" ({s.get('metric')})") for s in shown
    ]
    models = e["models"]
    drawn = [
        (f"{role} {models.get(role)}", [s.get(role) for s in shown])
        for role in _MODELS
        if any(isinstance(s.get(role), Mapping) for s in shown)
    ]
    reference = None
    if len(metrics) == 1:
        (metric,) = metrics
        overall = [m.get("challenger") for m in e.get("metrics") or [] if m.get("metric") == metric]
        if overall and isinstance(overall[0], Mapping) and _finite(overall[0].get("value")):
            reference = float(overall[0]["value"])
    png = _plots.slices_plot(names, drawn, [_rank(s) == 0 for s in shown], reference)
    champion = models.get("champion") is not None
    head = ["slice", "rows", "metric", "challenger"] + (["champion"] if champion else []) + ["gate"]
    body = []
    for s in shown:
        row = [
            f"<td>{_text(s.get('slice'))}</td>",
            f'<td class="n">{_number(s.get("rows"))}</td>',
            f"<td>{_text(s.get('metric'))}</td>",
            _interval_cell(s.get("challenger")),
        ]
        if champion:
            row.append(_interval_cell(s.get("champion")))
        row.append(_passed(s.get("passed")) if s.get("gated") else "<td>not gated</td>")
        body.append(row)
    note = ""
    if rest:
        failed = sum(_rank(s) == 0 for s in rest)
        passed = sum(_rank(s) == 1 and s.get("passed") is True for s in rest)
        note = (
            f"<p>{len(rest):,} more slices not shown: {failed:,} failed their gate, "
            f"{passed:,} passed it, {len(rest) - failed - passed:,} not gated or not decided.</p>"
        )
    return "<h2>Slices</h2>" + _image(png, "Per-slice metric") + _table(head, body) + note


def _leave_one_out(e: Mapping[str, Any]) -> str:
    lofo = e.get("leave_one_out")
    if not isinstance(lofo, Mapping) or not isinstance(lofo.get("features"), Mapping):
        return ""
    body = [
        [f"<td>{_text(name)}</td>", _interval_cell({**d, "value": d.get("delta")}, signed=True),
         f'<td class="n">{_p(d.get("p_value"))}</td>']
        for name, d in lofo["features"].items()
        if isinstance(d, Mapping)
    ]  # fmt: skip
    skipped = lofo.get("skipped") or []
    note = f"<p>Not refitted: {_text(', '.join(map(str, skipped)))}</p>" if skipped else ""
    head = ["feature", f"{_text(lofo.get('metric'))}: full - without", "p"]
    return "<h2>Leave one feature out</h2>" + _table(head, body) + note


def _latency(e: Mapping[str, Any]) -> str:
    latency = e.get("latency")
    if not isinstance(latency, Mapping) or not latency:
        return ""
    body = [
        [f"<th>{_text(k)}</th>", f'<td class="n">{_number(v)}</td>'] for k, v in latency.items()
    ]
    return "<h2>Latency</h2>" + _table([], body)


def _image(png: bytes, alt: str) -> str:
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{escape(alt)}" width="{width}" height="{height}" '
        f'src="data:image/png;base64,{data}"><figcaption>{escape(alt)}</figcaption></figure>'
    )


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    header = "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" if head else ""
    rows = "".join("<tr>" + "".join(cells) + "</tr>" for cells in body)
    return f"<table>{header}{rows}</table>"


def _interval_cell(interval: Any, signed: bool = False) -> str:
    if not isinstance(interval, Mapping) or not _finite(interval.get("value")):
        return '<td class="n">—</td>'
    show = _signed if signed else _number
    text = show(interval["value"])
    low, high = interval.get("low"), interval.get("high")
    if _finite(low) or _finite(high):
        text += f' <span class="ci">[{show(low)}, {show(high)}]</span>'
    return f'<td class="n">{text}</td>'


def _passed(passed: Any) -> str:
    if passed is None:
        return "<td>—</td>"
    return '<td class="pass">passed</td>' if passed else '<td class="fail">failed</td>'


def _operating(counts: Any, curve: str) -> tuple[float, float] | None:
    """Where the model's threshold puts it: (fpr, tpr) on the ROC curve, (recall,
    precision) on the PR curve; None where the counts do not define the point."""
    if not isinstance(counts, Mapping):
        return None
    tp, fp, fn, tn = (counts.get(key) or 0 for key in ("tp", "fp", "fn", "tn"))
    if not tp + fn or (curve == "roc" and not fp + tn) or (curve == "pr" and not tp + fp):
        return None
    if curve == "roc":
        return fp / (fp + tn), tp / (tp + fn)
    return tp / (tp + fn), tp / (tp + fp)


def _rank(s: Mapping[str, Any]) -> int:
    """0: failed its gate; 1: gated, passed or not decided (`passed` None); 2: not gated."""
    if not s.get("gated"):
        return 2
    return 0 if s.get("passed") is False else 1


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _text(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else _text(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return "n/a"
    size = abs(value)
    if size == 0:
        return "0"
    if size >= 1e6 or size < 1e-3:
        return f"{value:.3e}"
    if size >= 100:
        return f"{value:,.1f}"
    return f"{value:.4g}" if size >= 1 else f"{value:.4f}"


def _signed(value: Any) -> str:
    text = _number(value)
    return "+" + text if _finite(value) and value >= 0 else text


def _p(value: Any) -> str:
    if not _finite(value):
        return "—"
    return "&lt; 0.0001" if value < 1e-4 else f"{value:.4f}"
