"""A small world for training tests: users visit a shop and some buy within the hour.

The chance of a purchase grows with the pages of the visit and with the user's own habit
(how often they visited that day), so a model on the `activity` view can learn it."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from gyre.collect import EventType, event_types, format_timestamp
from gyre.config import Config, load_config
from gyre.stores import Stores

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
START_US = 1_750_000_000 * 1_000_000

GYRE_TOML = """
[collect.events.visits]
fields = {visit = "string", user = "int", pages = "int", at = "timestamp"}
entity = ["user"]
time = "at"
id = "visit"

[collect.events.purchases]
fields = {order = "string", user = "int", amount = "float", at = "timestamp"}
entity = ["user"]
time = "at"
id = "order"

[features.views.activity]
source = "visits"
aggregations = ["count() over 1d", "mean(pages) over 1d"]
request = {pages = "int"}
"""

SPEC = """
[model]
name = "buyers"
task = "classification"
family = "lightgbm"
seed = 7
params = {n_estimators = 40, num_leaves = 8}

[features]
views = ["activity"]

[rows]
event = "visits"

[label]
event = "purchases"
within = "1h"

[split]
holdout = 0.2
validation = 0.1
"""


def write_world(folder: Path, store_toml: str = "") -> Config:
    """gyre.toml (with `store_toml`, e.g. a PostgreSQL [store]) and a spec in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gyre.toml").write_text(store_toml + GYRE_TOML)
    (folder / "buyers.toml").write_text(SPEC)
    return load_config(folder / ".gyre", folder / "gyre.toml")


def visits_and_purchases(
    users: int = 60, hours: int = 72, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    visits, purchases = [], []
    habit = [rng.random() for _ in range(users)]
    for user in range(users):
        at = START_US + rng.randrange(HOUR_US)
        while at < START_US + hours * HOUR_US:
            pages = rng.randrange(1, 12)
            visits.append({"visit": f"v{len(visits)}", "user": user, "pages": pages, "at": at})
            chance = 1 / (1 + math.exp(-(pages - 6) / 1.5 - 3 * (habit[user] - 0.5)))
            if rng.random() < chance:
                bought = at + rng.randrange(1, 50) * MINUTE_US
                purchases.append(
                    {
                        "order": f"o{len(purchases)}",
                        "user": user,
                        "amount": round(5 + pages * rng.random() * 3, 2),
                        "at": bought,
                    }
                )
            at += round(rng.expovariate(1 / (3 * HOUR_US * (1.5 - habit[user]))))
    return visits, purchases


def facts(kind: EventType, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`records` (times in epoch microseconds) as validated facts of `kind`."""
    return [kind.validate({**r, "at": format_timestamp(r["at"])}) for r in records]


def fill(config: Config, **kwargs: Any) -> tuple[int, int]:
    """The world's facts in the config's fact log; (visits, purchases) stored."""
    types = event_types(config.collect.events)
    visits, purchases = visits_and_purchases(**kwargs)
    log = Stores.from_config(config).open_fact_log()
    try:
        log.append(
            [
                (types["visits"], facts(types["visits"], visits)),
                (types["purchases"], facts(types["purchases"], purchases)),
            ]
        )
    finally:
        log.close()
    return len(visits), len(purchases)
