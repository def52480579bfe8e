"""Alerts: a detector that fires becomes an immutable fact in the fact log (type
`gyre_alert`, replayable like any other fact), a log line, and optionally a JSON POST to a
webhook.

An alert's id is a hash of what it says (model, version, detector, evidence), and the fact
log keeps one fact per id: running the same check on the same window again raises nothing
new. Clients cannot post a `gyre_alert` (no declared event type may take the name), so
what the log holds under it is what gyre's own detectors found.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gyre.collect import EventType, FactLog, format_timestamp
from gyre.errors import MonitorError

if TYPE_CHECKING:
    from gyre.monitor._profile import InputCheck

log = logging.getLogger("gyre.monitor")

ALERT_EVENT = EventType(
    name="gyre_alert",
    fields={
        "alert_id": "string",
        "model": "string",
        "version": "int",
        "detector": "string",
        "at": "timestamp",
        "summary": "string",
        "evidence": "string",
    },
    entity=("model",),
    time_field="at",
    id_field="alert_id",
)
WEBHOOK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Alert:
    model: str
    version: int
    detector: str  # drift, invariants
    summary: str  # one line, for people
    evidence: dict[str, Any]  # what the detector found, for the record (JSON)
    at_us: int = 0  # when it fired (0: now, when stored)

    @property
    def alert_id(self) -> str:
        said = json.dumps([self.model, self.version, self.detector, self.evidence],
                          sort_keys=True, default=str)  # fmt: skip
        return hashlib.sha256(said.encode()).hexdigest()[:32]

    def as_fact(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "model": self.model, "version": self.version,
            "detector": self.detector,
            "at": format_timestamp(self.at_us or int(time.time() * 1_000_000)),
            "summary": self.summary,
            "evidence": json.dumps(self.evidence, sort_keys=True, default=str),
        }  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "model": self.model, "version": self.version,
            "detector": self.detector, "at": format_timestamp(self.at_us),
            "summary": self.summary, "evidence": self.evidence,
        }  # fmt: skip

    @classmethod
    def from_fact(cls, data: dict[str, Any]) -> Alert:
        try:
            evidence = json.loads(data["evidence"])
        except (TypeError, ValueError):
            evidence = {"unreadable": str(data.get("evidence"))}
        return cls(
            str(data["model"]), int(data["version"]), str(data["detector"]),
            str(data["summary"]), evidence if isinstance(evidence, dict) else {"value": evidence},
            int(data["at"]),
        )  # fmt: skip


def input_alerts(
    model: str, version: int, found: InputCheck, window: Mapping[str, Any]
) -> list[Alert]:
    """The alerts of a check of served inputs (`check_inputs`): one for dataset drift, one
    for broken invariants; `window` says which records were checked (their count and
    times), so the same check of the same window is the same alert."""
    alerts = []
    now_us = int(time.time() * 1_000_000)
    drift = found.drift
    if drift is not None and drift.dataset_drift:
        drifted = [f for f in drift.features if f.drifted]
        alerts.append(Alert(
            model, version, "drift",
            f"dataset drift: {len(drifted)} of {len(drift.features)} features drifted "
            f"({', '.join(f.feature for f in drifted[:5])}{', …' if len(drifted) > 5 else ''}) "
            f"over {found.rows} served rows",
            {"window": dict(window), "share": drift.share,
             "drifted": [{"feature": f.feature, "method": f.method, "statistic": f.statistic,
                          "threshold": f.threshold} for f in drifted]},
            now_us,
        ))  # fmt: skip
    if found.violations:
        broken = sorted({f"{v.feature} {v.rule}" for v in found.violations})
        alerts.append(Alert(
            model, version, "invariants",
            f"{len(found.violations)} invariants of the training schema broken "
            f"({', '.join(broken[:5])}{', …' if len(broken) > 5 else ''}) over "
            f"{found.rows} served rows",
            {"window": dict(window), "violations": [v.as_dict() for v in found.violations]},
            now_us,
        ))  # fmt: skip
    return alerts


def output_alert(
    model: str, version: int, bad: int, records: int, window: Mapping[str, Any]
) -> Alert | None:
    """The alert of answers with NaN or infinite outputs (None: none had any)."""
    if not bad:
        return None
    return Alert(
        model, version, "outputs",
        f"{bad} of {records} answers held NaN or infinite outputs",
        {"window": dict(window), "records": records, "non_finite_records": bad},
        int(time.time() * 1_000_000),
    )  # fmt: skip


def slo_alert(
    model: str,
    version: int,
    latencies_ms: Any,
    defaults: int,
    window: Mapping[str, Any],
    *,
    p99_ms: float | None = None,
    default_ratio: float | None = None,
) -> Alert | None:
    """The alert of a window of answers past its service levels: the p99 latency (from the
    request's arrival to its answer) above `p99_ms`, or the share of default answers above
    `default_ratio` (None: no limit). An empty window passes."""
    import numpy as np

    latencies = np.asarray(latencies_ms, dtype=np.float64)
    if not len(latencies):
        return None
    found = {"p99_ms": float(np.percentile(latencies, 99)),
             "default_ratio": defaults / len(latencies)}  # fmt: skip
    limits = {"p99_ms": p99_ms, "default_ratio": default_ratio}
    over = {k: (v, limits[k]) for k, v in found.items() if limits[k] is not None
            and v > (limits[k] or 0)}  # fmt: skip
    if not over:
        return None
    said = ", ".join(f"{k} {v:.4g} (limit {limit:.4g})" for k, (v, limit) in over.items())
    return Alert(
        model, version, "slo", f"service level missed over {len(latencies)} answers: {said}",
        {"window": dict(window), **{k: {"found": v, "limit": limit}
                                    for k, (v, limit) in over.items()}},
        int(time.time() * 1_000_000),
    )  # fmt: skip


def staleness_alert(
    model: str,
    version: int,
    ages_s: Mapping[str, float | None],
    limits_s: Mapping[str, float | None],
) -> Alert | None:
    """The alert of a version older than its limits: `ages_s` and `limits_s` by name
    (`model`: since it was published, `data`: since the newest row it learned from;
    None: unknown, or no limit). The evidence rounds the ages to the hour, so the same
    staleness checked again within the hour is the same alert."""
    over: dict[str, tuple[float, float]] = {}
    for name, age in ages_s.items():
        limit = limits_s.get(name)
        if age is not None and limit is not None and age > limit:
            over[name] = (age, limit)
    if not over:
        return None
    said = ", ".join(f"{name} {age / 86_400:.1f} days old (limit {limit / 86_400:.1f})"
                     for name, (age, limit) in over.items())  # fmt: skip
    return Alert(
        model, version, "staleness", f"stale: {said}",
        {name: {"age_hours": round(age / 3_600), "limit_s": limit}
         for name, (age, limit) in over.items()},
        int(time.time() * 1_000_000),
    )  # fmt: skip


def raise_alerts(
    fact_log: FactLog, alerts: Sequence[Alert], *, webhook: str | None = None
) -> list[Alert]:
    """Store `alerts` in the fact log and announce the new ones (a log line each, and a
    POST of their JSON to `webhook` when given); the alerts stored, as stored. An alert
    already in the log is not stored or announced again (the log says which it took: one
    append per alert, and a check raises a handful). A webhook that fails, or does not
    answer within WEBHOOK_TIMEOUT_S, is logged, never raised: the alert is in the log
    either way."""
    stored = []
    for alert in alerts:
        fact = ALERT_EVENT.validate(alert.as_fact())
        (result,) = fact_log.append([(ALERT_EVENT, [fact])])
        if result.stored:
            stored.append(Alert.from_fact(fact))
    for alert in stored:
        log.warning("alert %s: %s version %d: %s", alert.detector, alert.model,
                    alert.version, alert.summary)  # fmt: skip
    if webhook and stored:
        _post(webhook, [a.as_json() for a in stored])
    return stored


def check_webhook(url: str) -> str:
    """`url` if it is an http(s) URL a webhook can be posted to; MonitorError otherwise."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise MonitorError(f"webhook {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise MonitorError(f"webhook {url!r} must be an http:// or https:// URL with a host")
    return url


def _post(url: str, payload: list[dict[str, Any]]) -> None:
    """POST the alerts, waiting WEBHOOK_TIMEOUT_S at most in all (httpx's timeout bounds
    each read, so a server that trickles its answer would hold the check much longer)."""
    import threading

    import httpx

    failed: list[str] = []

    def post() -> None:
        try:
            answer = httpx.post(url, json={"alerts": payload}, timeout=WEBHOOK_TIMEOUT_S)
            answer.raise_for_status()
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            failed.append(str(exc))

    thread = threading.Thread(target=post, name="gyre-webhook", daemon=True)
    thread.start()
    thread.join(WEBHOOK_TIMEOUT_S)
    if thread.is_alive():
        failed.append(f"no answer within {WEBHOOK_TIMEOUT_S:g} s")
    if failed:
        log.warning(
            "the alert webhook %s failed (%s); the alerts are in the fact log", url, failed[0]
        )


def read_alerts(fact_log: FactLog, model: str | None = None, *, limit: int = 50) -> list[Alert]:
    """The latest alerts, newest first (of `model` only, when given: among the newest
    10,000). A fact that is not an alert as this gyre writes them is skipped."""
    found = []
    for fact in reversed(fact_log.tail(ALERT_EVENT.name, 10_000 if model else limit)):
        try:
            alert = Alert.from_fact(fact.data)
        except (KeyError, TypeError, ValueError):
            continue
        if model is None or alert.model == model:
            found.append(alert)
            if len(found) == limit:
                break
    return found


__all__ = [
    "ALERT_EVENT",
    "WEBHOOK_TIMEOUT_S",
    "Alert",
    "check_webhook",
    "input_alerts",
    "output_alert",
    "raise_alerts",
    "read_alerts",
    "slo_alert",
    "staleness_alert",
]
