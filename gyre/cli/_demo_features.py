"""The features half of `gyre demo`: events in over HTTP, a model trained on a feature view
from the fact log, published, called by entity, and the skew check over what it served."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gyre.cli._app import console
from gyre.collect import event_types
from gyre.config import Config
from gyre.errors import GyreError
from gyre.features import feature_views
from gyre.monitor import check_skew
from gyre.registry import CHAMPION, Registry
from gyre.stores import Stores

# Why the demo's models are champion without a blessing (`gyre registry history`).
FIRST_MODEL = "demo: the first model, nothing to compare with"
MODEL = "shop-activity"
VIEW = "shop_activity"
EVENT_TYPE = "demo_orders"
SHOPS = 30
MINUTE_S = 60.0
# Declared next to the user's own settings in the config the demo serves with.
CONFIG = f"""
[collect.events.{EVENT_TYPE}]
fields = {{id = "string", shop = "int", amount = "float", items = "int", at = "timestamp"}}
entity = ["shop"]
time = "at"
id = "id"

[features.views.{VIEW}]
source = "{EVENT_TYPE}"
transforms = {{per_item = "amount / items"}}
aggregations = ["count() over 10m", "count() over 1h", "sum(amount) over 1h",
                "mean(per_item) over 1h", "max(items) over 1h"]
request = {{basket = "float", hour = "hour_of_day"}}
"""


def demo_config(home: Path, user_config: Path | None) -> Path:
    """A config file: the user's settings (if any) plus the demo's event type and view."""
    own = user_config.read_text() if user_config is not None else ""
    path = home / "demo.toml"
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(own + "\n" + CONFIG)
    return path


def _orders(rng: random.Random, now_s: float) -> list[dict[str, Any]]:
    """Three hours of orders; each shop has its own rate (1 to 20 an hour)."""
    events = []
    for shop in range(SHOPS):
        rate_per_s = rng.uniform(1, 20) / 3600
        at = now_s - 180 * MINUTE_S
        while True:
            at += rng.expovariate(rate_per_s)
            if at > now_s:
                break
            events.append({"id": f"demo-{shop}-{at:.3f}", "shop": shop,
                           "amount": round(rng.uniform(5, 80), 2), "items": rng.randint(0, 5),
                           "at": round(at, 3)})  # fmt: skip
    return events


def _labelled_rows(
    rng: random.Random, events: list[dict[str, Any]], now_s: float
) -> list[dict[str, Any]]:
    """(shop, ts, basket, label) rows; label: does the shop get an order in the next 10
    minutes? Times stop 10 minutes before now, so every label is known."""
    times: dict[int, list[float]] = {}
    for event in events:
        times.setdefault(event["shop"], []).append(event["at"])
    rows = []
    for _ in range(3000):
        shop = rng.randrange(SHOPS)
        ts = rng.uniform(now_s - 120 * MINUTE_S, now_s - 10 * MINUTE_S)
        label = any(ts < at <= ts + 10 * MINUTE_S for at in times.get(shop, []))
        rows.append({"shop": shop, "ts": round(ts * 1e6), "basket": round(rng.uniform(0, 60), 2),
                     "label": int(label)})  # fmt: skip
    return rows


def _wait_model(base: str, model: str, reload_interval_s: float, timeout_s: float = 30.0) -> None:
    """Until every server process has loaded `model`: each polls the registry on its own,
    so after the first answers, wait one more reload interval, then check on several new
    connections (the kernel spreads them over the processes)."""
    deadline = time.monotonic() + timeout_s
    confirmed = 0
    while confirmed < 10:
        if time.monotonic() > deadline:
            raise GyreError(f"the server did not load `{model}` within {timeout_s:.0f} s")
        if httpx.get(f"{base}/v2/models/{model}/ready", timeout=5.0).status_code != 200:
            confirmed = 0
            time.sleep(0.2)
            continue
        if confirmed == 0:
            time.sleep(reload_interval_s + 0.5)
        confirmed += 1


def run_features_demo(config: Config, base: str, show: Callable[..., int]) -> None:
    from gyre.learn import train_on_view

    console.rule("[bold]features: events → training set → model → call by entity → skew")
    rng = random.Random(0)
    now_s = time.time()
    events = _orders(rng, now_s)
    url = f"{base}/v1/events/{EVENT_TYPE}"
    show("ingest events (durable before the answer)", "POST", url, events[:2])
    for start in range(2, len(events), 500):
        answer = httpx.post(url, json=events[start : start + 500], timeout=30.0)
        answer.raise_for_status()
    console.print(f"ingested {len(events)} orders of {SHOPS} shops over the last 3 hours")
    view = feature_views(config.features.views, event_types(config.collect.events))[VIEW]
    log = Stores.from_config(config).open_fact_log()
    try:
        trained = train_on_view(log, view, _labelled_rows(rng, events, now_s))
    finally:
        log.close()
    lineage = trained.lineage
    console.print(
        f"trained {lineage['estimator']} on view `{VIEW}` ({view.definition_hash[:12]}) at "
        f"fact-log watermark {lineage['fact_log_watermark']}: will a shop get an order in the "
        f"next 10 minutes? accuracy on the latest 25% {lineage['metrics']['test_score']:.3f}"
    )
    registry = Registry.from_config(config)
    version = registry.publish(
        MODEL, trained.model, trained.sample, alias=CHAMPION, lineage=lineage, features=view,
        force_alias=FIRST_MODEL,  # no run of `gyre train` to evaluate: forced, with why
    )  # fmt: skip
    registry.close()
    done = "already published" if version.reused else "published"
    console.print(f"{done} [bold]{MODEL}[/] version {version.version} with its feature view")
    _wait_model(base, MODEL, config.serve.reload_interval_ms / 1000.0)
    status = show(
        "predict by entity (the server computes the features)",
        "POST",
        f"{base}/v2/models/{MODEL}/infer",
        {"parameters": {"entity": {"shop": 7}, "request_features": {"basket": 24.5}}},
    )
    if status != 200:
        raise GyreError(f"the call by entity answered HTTP {status} (shown above)")
    log = Stores.from_config(config).open_fact_log()
    try:
        deadline = time.monotonic() + 10.0
        while True:  # the served-vector log is written off the request path
            (report,) = check_skew(
                log, {VIEW: view}, Stores.from_config(config).served_log_path, view=VIEW
            )
            if report.checked or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        log.close()
    console.print(
        f"skew check (`gyre features skew`): {report.checked} served vector(s) recomputed "
        f"offline, {sum(report.mismatches.values())} mismatching values"
    )
