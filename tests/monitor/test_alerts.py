"""Alerts: stored once each in the fact log, announced in a log line and to a webhook, and
a name no declared event type may take."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gyre.collect import SQLiteFactLog, event_types
from gyre.config import EventTypeConfig
from gyre.errors import ConfigError
from gyre.monitor import ALERT_EVENT, Alert, raise_alerts, read_alerts


def _alert(model: str = "m", share: float = 0.6) -> Alert:
    return Alert(model, 2, "drift", f"{share:.0%} of the features drifted", {"share": share})


def test_an_alert_is_stored_once_and_read_back_newest_first(tmp_path: Path) -> None:
    log = SQLiteFactLog(tmp_path / "facts.db")
    try:
        assert [a.alert_id for a in raise_alerts(log, [_alert()])] == [_alert().alert_id]
        assert raise_alerts(log, [_alert()]) == []  # the same check, the same window
        raise_alerts(log, [_alert(share=0.9), _alert("other")])
        found = read_alerts(log)
        assert [(a.model, a.evidence["share"]) for a in found] == [
            ("other", 0.6), ("m", 0.9), ("m", 0.6)
        ]  # fmt: skip
        assert [a.evidence["share"] for a in read_alerts(log, "m", limit=1)] == [0.9]
        assert found[0].at_us > 0 and found[0].version == 2
        assert log.count(ALERT_EVENT.name) == 3
    finally:
        log.close()


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_new_alerts_go_to_the_webhook_and_a_failing_one_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log = SQLiteFactLog(tmp_path / "facts.db")
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        raise_alerts(log, [_alert()], webhook=url)
        raise_alerts(log, [_alert()], webhook=url)  # not new: not posted again
        assert [[a["summary"] for a in p["alerts"]] for p in _Hook.received] == [
            ["60% of the features drifted"]
        ]
        with caplog.at_level(logging.WARNING, logger="gyre.monitor"):
            stored = raise_alerts(log, [_alert(share=0.7)], webhook="http://127.0.0.1:9/none")
        assert len(stored) == 1 and log.count(ALERT_EVENT.name) == 2  # stored all the same
        assert "the alert webhook http://127.0.0.1:9/none failed" in caplog.text
        assert "alert drift: m version 2: 70% of the features drifted" in caplog.text
    finally:
        log.close()
        server.shutdown()
        server.server_close()


def test_no_declared_event_type_may_take_the_alerts_name() -> None:
    declared = EventTypeConfig(
        fields={"model": "string", "at": "timestamp"}, entity=["model"], time="at"
    )
    with pytest.raises(ConfigError, match="`gyre_alert` is gyre's own"):
        event_types({"gyre_alert": declared})


def test_service_levels_alert_past_their_limits_only() -> None:
    from gyre.monitor import slo_alert

    window = {"records": 100}
    latencies = [1.0] * 98 + [40.0, 50.0]
    assert slo_alert("m", 1, latencies, 0, window, p99_ms=60.0, default_ratio=0.1) is None
    assert slo_alert("m", 1, [], 0, window, p99_ms=0.0) is None  # nothing answered
    late = slo_alert("m", 1, latencies, 20, window, p99_ms=10.0, default_ratio=0.1)
    assert late is not None and late.detector == "slo"
    assert set(late.evidence) == {"window", "p99_ms", "default_ratio"}
    assert late.evidence["default_ratio"] == {"found": 0.2, "limit": 0.1}


def test_a_webhook_that_never_answers_holds_the_check_5_s_at_most(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket
    import time

    from gyre.errors import MonitorError
    from gyre.monitor import WEBHOOK_TIMEOUT_S, check_webhook

    silent = socket.create_server(("127.0.0.1", 0))  # takes the connection, never answers
    log = SQLiteFactLog(tmp_path / "facts.db")
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="gyre.monitor"):
            assert len(raise_alerts(log, [_alert()], webhook=url)) == 1
        assert time.monotonic() - started < WEBHOOK_TIMEOUT_S + 2
        assert f"no answer within {WEBHOOK_TIMEOUT_S:g} s" in caplog.text
    finally:
        log.close()
        silent.close()
    for bad in ("http://[::1/", "ftp://example.com/hook", "hook", "http:///x"):
        with pytest.raises(MonitorError, match="webhook"):
            check_webhook(bad)
    assert check_webhook("https://alerts.example.com/gyre") == "https://alerts.example.com/gyre"
