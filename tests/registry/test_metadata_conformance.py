"""The metadata-store conformance suite: every implementation (SQLite under the home,
PostgreSQL) must behave as the in-memory reference (`Reference`) does for any sequence of
writes; plus what a reference cannot show: several writers at once (threads, processes),
the change feed read while written, and schema migrations from every earlier version."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gyre.config import StoreConfig
from gyre.errors import InvalidModel, ModelNotFound, NotBlessed, RegistryError, StoreError
from gyre.registry import MetadataStore, VersionEvaluation
from gyre.registry._schema import PG_DDL, SCHEMA_VERSION, SQLITE_DDL, migration
from gyre.stores import Stores
from gyre.types import Signature, TensorSpec

SIGNATURE = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1,)),))


@pytest.fixture
def store(stores: Stores) -> Iterator[MetadataStore]:
    opened = stores.open_metadata()
    yield opened
    opened.close()


def add(store: MetadataStore, model: str, content: str, **extra: Any) -> tuple[int, bool]:
    return store.add_version(
        model, flavor="onnx", artifact_sha256=content, artifact_bytes=len(content),
        native_sha256=None, native_bytes=None, signature=SIGNATURE, parity={},
        lineage={"why": "test"}, gyre_version="test", **extra,
    )  # fmt: skip


class Reference:
    """The registry's rules on plain dicts."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, int], dict[str, Any]] = {}  # content, deleted, decision
        self.aliases: dict[str, dict[str, int]] = {}
        self.policies: dict[str, tuple[str, dict[str, Any]]] = {}
        self.verdicts: dict[tuple[str, int], str] = {}  # the latest evaluation's
        self.changes = 0

    def add(self, model: str, content: str, force_new: bool) -> tuple[int, bool]:
        if not force_new:
            for (m, v), row in sorted(self.versions.items()):
                if m == model and not row["deleted"] and row["content"] == content:
                    return v, True
        version = 1 + max((v for m, v in self.versions if m == model), default=0)
        self.versions[(model, version)] = {"content": content, "deleted": False, "decision": None}
        self.changes += 1
        return version, False

    def live(self, model: str, version: int) -> bool:
        row = self.versions.get((model, version))
        return row is not None and not row["deleted"]


operation = st.one_of(
    st.tuples(st.just("add"), st.sampled_from("ab"), st.sampled_from("xyz"), st.booleans()),
    st.tuples(st.just("alias"), st.sampled_from("ab"), st.sampled_from(["champion", "c2"]),
              st.integers(0, 4)),
    st.tuples(st.just("unalias"), st.sampled_from("ab"), st.sampled_from(["champion", "c2"])),
    st.tuples(st.just("delete"), st.sampled_from("ab"), st.integers(0, 4)),
    st.tuples(st.just("policy"), st.sampled_from("ab"), st.sampled_from(["split", "shadow"])),
    st.tuples(st.just("decide"), st.sampled_from("ab"), st.integers(0, 4),
              st.sampled_from([None, 0.25, 0.9])),
    st.tuples(st.just("evaluate"), st.sampled_from("ab"), st.integers(0, 4),
              st.sampled_from(["blessed", "vetoed"])),
)  # fmt: skip


def judged(verdict: str, **extra: Any) -> dict[str, Any]:
    """An evaluation as `gyre evaluate` records it (its summary's required keys)."""
    return {
        "verdict": verdict, "run_id": "r1", "rows": 40, "reasons": [], "champion": None,
        "gates": [{"gate": "roc_auc at least 0.6", "passed": verdict == "blessed",
                   "detail": "0.71 [0.65, 0.77]"}],
        "metrics": {"roc_auc": {"value": 0.71, "low": 0.65, "high": 0.77, "method": "delong"}},
        **extra,
    }  # fmt: skip


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(operation, max_size=25))
def test_the_store_follows_the_reference(stores: Stores, operations: list[tuple[Any, ...]]) -> None:
    # A store of its own per example: a new home, or the database emptied.
    store = _fresh(stores)
    reference = Reference()
    seen: list[str | None] = []  # the verdict each alias move's guard was shown

    def guard(latest: VersionEvaluation | None) -> bool:
        seen.append(None if latest is None else latest.verdict)
        return False

    try:
        for op, model, *args in operations:
            if op == "add":
                content, force_new = args
                assert add(store, model, content, force_new=force_new) == reference.add(
                    model, content, force_new
                )
            elif op == "alias":
                alias, version = args
                seen.clear()
                if reference.live(model, version):
                    before = reference.aliases.get(model, {}).get(alias)
                    moved = store.set_alias(model, alias, version, reason="t", guard=guard)
                    assert moved == before
                    # The guard saw the version's latest evaluation, in the move's transaction.
                    assert seen == [reference.verdicts.get((model, version))]
                    reference.aliases.setdefault(model, {})[alias] = version
                    reference.changes += 1
                else:
                    with pytest.raises(ModelNotFound):
                        store.set_alias(model, alias, version, reason="t")
            elif op == "unalias":
                (alias,) = args
                if alias in reference.aliases.get(model, {}):
                    store.delete_alias(model, alias, reason="t")
                    del reference.aliases[model][alias]
                    reference.changes += 1
                else:
                    with pytest.raises(ModelNotFound):
                        store.delete_alias(model, alias, reason="t")
            elif op == "delete":
                (version,) = args
                aliased = version in reference.aliases.get(model, {}).values()
                if reference.live(model, version) and not aliased:
                    store.delete_version(model, version, reason="t")
                    reference.versions[(model, version)]["deleted"] = True
                    reference.changes += 1
                else:
                    with pytest.raises(RegistryError):  # ModelNotFound is one
                        store.delete_version(model, version, reason="t")
            elif op == "decide":
                version, threshold = args
                decision = None
                if threshold is not None:
                    decision = {"threshold": threshold, "classes": [0, 1]}
                if reference.live(model, version):
                    store.set_decision(model, version, decision, reason="t")
                    reference.versions[(model, version)]["decision"] = decision
                    reference.changes += 1
                else:
                    with pytest.raises(ModelNotFound):
                        store.set_decision(model, version, decision, reason="t")
            elif op == "evaluate":
                version, verdict = args
                if reference.live(model, version):
                    found = store.record_evaluation(model, version, judged(verdict))
                    assert (found.verdict, found.blessed) == (verdict, verdict == "blessed")
                    reference.verdicts[(model, version)] = verdict
                    reference.changes += 1
                else:
                    with pytest.raises(ModelNotFound):
                        store.record_evaluation(model, version, judged(verdict))
            else:
                (kind,) = args
                store.set_policy(model, kind, {"n": len(operations)}, reason="t")
                reference.policies[model] = (kind, {"n": len(operations)})
                reference.changes += 1
        live = sorted(k for k, row in reference.versions.items() if not row["deleted"])
        assert [(v.model, v.version) for v in store.versions()] == live
        assert len(store.versions(include_deleted=True)) == len(reference.versions)
        assert store.aliases() == {m: a for m, a in reference.aliases.items() if a}
        assert store.policies() == reference.policies
        for model, version in live:
            found = store.version(model, version)
            names = sorted(a for a, v in reference.aliases.get(model, {}).items() if v == version)
            row = reference.versions[(model, version)]
            assert (found.artifact_sha256, sorted(found.aliases), found.decision) == (
                row["content"],
                names,
                row["decision"],
            )
            latest = store.latest_evaluation(model, version)
            assert (None if latest is None else latest.verdict) == reference.verdicts.get(
                (model, version)
            )
        changes = store.changes()
        assert len(changes) == reference.changes
        assert [c["seq"] for c in changes] == sorted({c["seq"] for c in changes})
        assert store.change_seq() == (changes[-1]["seq"] if changes else 0)
        snapshot = store.snapshot()
        assert snapshot.position == store.change_seq()
        assert snapshot.versions == tuple(store.versions())
        assert (snapshot.aliases, snapshot.policies) == (store.aliases(), store.policies())
    finally:
        store.close()


def _fresh(stores: Stores) -> MetadataStore:
    if stores.config.url is None:
        import shutil

        shutil.rmtree(stores.home, ignore_errors=True)
    else:
        import psycopg

        with psycopg.connect(stores.config.url, autocommit=True) as conn:
            conn.execute(
                "DROP TABLE IF EXISTS versions, aliases, policies, changes, evaluations,"
                " gyre_schema"
            )
    return stores.open_metadata()


def test_changes_come_in_keyset_pages(store: MetadataStore) -> None:
    version, _ = add(store, "m", "x")
    for i in range(9):
        store.set_alias("m", f"a{i}", version, reason="t")
    add(store, "other", "y")
    everything = store.changes()
    pages, after = [], 0
    while page := store.changes(after=after, limit=3):
        pages.append(page)
        after = page[-1]["seq"]
    assert [c for page in pages for c in page] == everything and len(pages) == 4
    assert [c["model"] for c in store.changes("m", after=everything[0]["seq"])] == ["m"] * 9
    assert everything[1] | {"at": 0} == {
        "seq": everything[1]["seq"], "at": 0, "model": "m", "action": "alias", "alias": "a0",
        "version": 1, "previous": None, "why": "t",
    }  # fmt: skip


def test_numbers_a_database_cannot_hold_are_not_found(store: MetadataStore) -> None:
    add(store, "m", "x")
    for version in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(ModelNotFound, match="does not exist"):
            store.set_alias("m", "champion", version, reason="t")
        with pytest.raises(ModelNotFound):
            store.version("m", version)


def test_concurrent_writers_never_share_a_version_and_the_feed_misses_nothing(
    stores: Stores,
) -> None:
    """Writers on threads, each with its own store (as several servers and CLIs have),
    publish the same model while a poller follows the change feed by position: no version
    number twice, and the poller sees every change once, in order."""
    writers = [stores.open_metadata() for _ in range(4)]
    poller = stores.open_metadata()
    numbers: list[int] = []
    done = threading.Event()

    def publish(number: int) -> None:
        for i in range(8):
            numbers.append(add(writers[number], "race", f"{number}-{i}")[0])

    seen: list[int] = []

    def follow() -> None:
        after = 0
        while True:
            finished = done.is_set()
            page = poller.changes(after=after)
            seen.extend(c["seq"] for c in page)
            after = page[-1]["seq"] if page else after
            if finished and not page:
                return

    reader = threading.Thread(target=follow)
    reader.start()
    threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join()
    assert sorted(numbers) == list(range(1, 33))
    assert seen == sorted(seen) and len(seen) == 32 == len(set(seen))
    # The same content published at once by all of them is one version.
    same: list[tuple[int, bool]] = []
    threads = [
        threading.Thread(target=lambda w=w: same.append(add(w, "once", "z"))) for w in writers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(same) == [(1, False), (1, True), (1, True), (1, True)]
    for each in [*writers, poller]:
        each.close()


def _publish_many(config: StoreConfig, home: str, queue: multiprocessing.Queue[int]) -> None:
    store = Stores(Path(home), config).open_metadata()
    for i in range(5):
        queue.put(add(store, "race", f"{home}-{i}", force_new=True)[0])
    store.close()


def test_processes_never_share_a_version_number(stores: Stores) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    workers = [
        ctx.Process(target=_publish_many, args=(stores.config, str(stores.home), queue))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert sorted(queue.get(timeout=5) for _ in range(15)) == list(range(1, 16))


def _stamp(stores: Stores, version: int) -> None:
    """Make the store's database as gyre left it at schema `version`, holding one model
    version, the way that gyre wrote it."""
    url = stores.config.url
    ddl = SQLITE_DDL if url is None else PG_DDL
    statements = [s for v in range(version) for s in migration(v, ddl)]
    statements.append(
        "INSERT INTO versions (model, version, created_at, flavor, artifact_sha256,"
        " artifact_bytes, signature, parity, lineage, gyre_version)"
        f" VALUES ('old', 1, 1.0, 'onnx', 'abc', 3, '{_encoded_signature()}', '{{}}', '{{}}',"
        " 'old')"
    )
    if url is None:
        stores.home.mkdir(parents=True)
        with sqlite3.connect(stores.registry_path) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        for statement in statements:
            pg.execute(statement)  # type: ignore[call-overload]
        pg.execute("CREATE TABLE gyre_schema (name TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        pg.execute("INSERT INTO gyre_schema VALUES ('registry', %s)", (version,))


def _encoded_signature() -> str:
    import msgspec

    return msgspec.json.encode(SIGNATURE).decode()


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_every_earlier_schema_is_migrated_and_keeps_what_it_held(
    stores: Stores, version: int
) -> None:
    _stamp(stores, version)
    store = stores.open_metadata()
    try:
        (old,) = store.versions("old")
        assert (old.version, old.artifact_sha256, old.files, old.decision) == (1, "abc", (), None)
        assert store.latest_evaluation("old", 1) is None  # none before the table existed
        assert add(store, "old", "new") == (2, False)
        store.record_evaluation("old", 2, judged("blessed"))
        store.set_alias("old", "champion", 2, reason="t")
        store.delete_version("old", 1, reason="t")
    finally:
        store.close()
    reopened = stores.open_metadata()  # the migrated schema opens as it is
    assert [v.version for v in reopened.versions("old")] == [2]
    latest = reopened.latest_evaluation("old", 2)
    assert latest is not None and latest.blessed and latest.evaluation == judged("blessed")
    reopened.close()


def test_a_newer_schema_is_refused(stores: Stores) -> None:
    stores.open_metadata().close()
    if stores.config.url is None:
        with sqlite3.connect(stores.registry_path) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(stores.config.url, autocommit=True) as pg:
            pg.execute("UPDATE gyre_schema SET version = version + 1 WHERE name = 'registry'")
    with pytest.raises((RegistryError, StoreError), match=f"version {SCHEMA_VERSION + 1}"):
        stores.open_metadata()


def test_a_process_never_holds_more_connections_than_its_pool(postgres_url: str) -> None:
    """MLflow's trouble (connections exhausted and leaked): 16 threads hammer one store
    whose pool may hold 2; the database sees at most 2 from it, and none leaks."""
    import psycopg

    stores = Stores(Path("unused"), StoreConfig(url=postgres_url, pool_max_size=2))
    store = stores.open_metadata()
    add(store, "m", "x")

    def work() -> None:
        for i in range(20):
            store.versions("m")
            store.set_alias("m", f"a{i % 3}", 1, reason="t")

    seen: list[int] = []
    done = threading.Event()

    def count() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                ).fetchone()
                seen.append(int(row[0]) if row else 0)

    counter = threading.Thread(target=count)
    counter.start()
    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    counter.join()
    assert max(seen) <= 2 and len(seen) > 10
    assert len(store.changes()) == 1 + 16 * 20


def test_stores_opened_together_on_a_new_database_make_their_tables_once(
    postgres_url: str,
) -> None:
    """The fact log and the metadata store share the schema-versions table: servers that
    start together on a new database must not race to create it."""
    import psycopg

    errors: list[BaseException] = []

    def open_one(opener: Any) -> None:
        try:
            opener().close()
        except BaseException as exc:  # what the test is about
            errors.append(exc)

    for _ in range(5):
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS facts, versions, aliases, policies, changes,"
                         " evaluations, gyre_schema")  # fmt: skip
        stores = Stores(Path("unused"), StoreConfig(url=postgres_url))
        openers = [stores.open_fact_log, stores.open_metadata] * 3
        threads = [threading.Thread(target=open_one, args=(o,)) for o in openers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []


def test_a_role_that_may_not_create_tables_uses_an_up_to_date_database(
    postgres_url: str,
) -> None:
    import psycopg

    stores = Stores(Path("unused"), StoreConfig(url=postgres_url))
    stores.open_metadata().close()
    stores.open_fact_log().close()
    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app-password'")
        conn.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    app_url = postgres_url.replace("gyre:gyre-test-password@", f"{role}:app-password@")
    store = Stores(Path("unused"), StoreConfig(url=app_url)).open_metadata()
    try:
        assert add(store, "m", "x") == (1, False)
        store.set_alias("m", "champion", 1, reason="t")
        assert store.aliases() == {"m": {"champion": 1}}
    finally:
        store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
    from gyre._postgres import close_pools

    close_pools()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE {role}")


def test_positions_past_what_a_database_holds_are_pages_like_any_other(
    store: MetadataStore,
) -> None:
    add(store, "m", "x")
    assert store.changes(after=10**30) == []
    assert len(store.changes(after=-(10**30))) == 1
    assert len(store.changes(limit=10**30)) == 1 and store.changes(limit=0) == []


def test_an_evaluation_reads_back_as_it_was_recorded_and_the_latest_one_counts(
    store: MetadataStore,
) -> None:
    version, _ = add(store, "m", "x")
    sha = "ab" * 32
    store.record_evaluation("m", version, judged("vetoed", reasons=["roc_auc below 0.8"]))
    found = store.record_evaluation("m", version, judged("blessed", report_sha256=sha))
    assert found == store.latest_evaluation("m", version)
    assert (found.model, found.version, found.verdict, found.broken) == ("m", 1, "blessed", None)
    assert found.evaluation == judged("blessed", report_sha256=sha) and found.blessed
    assert store.latest_evaluation("m", 2) is None and store.latest_evaluation("m", 2**64) is None
    assert store.changes()[-1] | {"seq": 0, "at": 0} == {
        "seq": 0, "at": 0, "model": "m", "action": "evaluate", "version": 1,
        "verdict": "blessed", "run_id": "r1", "champion": None, "report_sha256": sha,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("evaluation", "expected"),
    [
        ({"verdict": "blessed"}, "run_id"),
        (judged("maybe"), "verdict"),
        (judged("blessed", rows="many"), "rows"),
        (judged("blessed", reasons="none"), "reasons"),
        (judged("blessed", gates=[{"gate": "g"}]), "passed"),
        (judged("blessed", metrics={"roc_auc": {"value": float("nan")}}), "NaN or infinity"),
        (judged("blessed", report_sha256="abc"), "not a sha256"),
        ([judged("blessed")], "JSON object"),
    ],
)
def test_what_is_not_an_evaluation_is_refused_before_it_is_stored(
    store: MetadataStore, evaluation: Any, expected: str
) -> None:
    add(store, "m", "x")
    before = store.change_seq()
    with pytest.raises(InvalidModel, match=expected):
        store.record_evaluation("m", 1, evaluation)
    assert store.change_seq() == before and store.latest_evaluation("m", 1) is None


def test_an_evaluation_edited_in_the_database_reads_back_broken(stores: Stores) -> None:
    store = stores.open_metadata()
    try:
        add(store, "m", "x")
        add(store, "m", "y")
        store.record_evaluation("m", 1, judged("blessed"))
        store.record_evaluation("m", 2, judged("blessed"))
        _sql(stores, "UPDATE evaluations SET evaluation = '{\"verdict\": 1' WHERE version = 1")
        _sql(stores, "UPDATE evaluations SET verdict = 'vetoed' WHERE version = 2")
        first, second = store.latest_evaluation("m", 1), store.latest_evaluation("m", 2)
        assert first is not None and not first.blessed and "is not JSON" in str(first.broken)
        assert (
            second is not None and not second.blessed and "is not its JSON's" in str(second.broken)
        )
    finally:
        store.close()


def _sql(stores: Stores, statement: str) -> None:
    if stores.config.url is None:
        with sqlite3.connect(stores.registry_path) as conn:
            conn.execute(statement)
        conn.close()
        return
    import psycopg

    with psycopg.connect(stores.config.url, autocommit=True) as pg:
        pg.execute(statement)  # type: ignore[call-overload]


def test_a_guard_refuses_a_move_or_records_it_as_forced(store: MetadataStore) -> None:
    add(store, "m", "x")
    before = store.change_seq()

    def refuse(latest: VersionEvaluation | None) -> bool:
        raise NotBlessed("not blessed")

    with pytest.raises(NotBlessed):
        store.set_alias("m", "champion", 1, reason="t", guard=refuse)
    assert store.aliases() == {} and store.change_seq() == before
    store.set_alias("m", "champion", 1, reason="first", guard=lambda latest: True)
    store.set_alias("m", "other", 1, reason="free", guard=lambda latest: False)
    forced, free = store.changes()[-2:]
    assert (forced["forced"], forced["why"], "forced" in free) == (True, "first", False)
