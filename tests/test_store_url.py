"""The `[store]` URL: where it comes from, and that its password never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from gyre._postgres import DatabaseURL, mask, unavailable
from gyre.config import load_config
from gyre.errors import ConfigError
from gyre.stores import Stores

SECRET = "pa:ss@w/rd%"
URL = "postgresql://gyre:pa%3Ass%40w%2Frd%25@db.internal:6543/models?sslmode=require"


def test_the_url_comes_from_the_file_or_the_environment_and_its_password_never_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "gyre.toml"
    config_file.write_text(f'[store]\nurl = "{URL}"\npool_max_size = 8\n')
    monkeypatch.delenv("GYRE_STORE_URL", raising=False)
    config = load_config(tmp_path / "home", config_file)
    assert config.store.url == URL and config.store.pool_max_size == 8
    stores = Stores.from_config(config)
    for text in (repr(config), str(config), repr(stores), stores.describe,
                 repr(stores.database_url), str(stores.database_url)):  # fmt: skip
        assert "pa%3Ass" not in text and SECRET not in text and "***" in text
    assert stores.describe == (
        "PostgreSQL postgresql://gyre:***@db.internal:6543/models?sslmode=require"
    )
    monkeypatch.setenv("GYRE_STORE_URL", "postgresql://other@elsewhere/db")
    assert load_config(tmp_path / "home", config_file).store.url == (
        "postgresql://other@elsewhere/db"
    )


def test_a_url_that_is_not_postgresql_is_refused_without_its_password(tmp_path: Path) -> None:
    config_file = tmp_path / "gyre.toml"
    for bad, message in [
        ("mysql://u:hunter2@h/db", "is not a PostgreSQL URL"),
        ("postgresql://u:hunter2@h:port/db", "port that is not a number"),
        ("postgresql://u:hunter2@h:5432/", "needs a host and a database"),
    ]:
        config_file.write_text(f'[store]\nurl = "{bad}"\n')
        with pytest.raises(ConfigError, match=message) as caught:
            load_config(tmp_path / "home", config_file)
        assert "hunter2" not in str(caught.value)
    config_file.write_text("[store]\npool_max_size = 0\n")
    with pytest.raises(ConfigError, match="pool_max_size = 0 is out of range"):
        load_config(tmp_path / "home", config_file)


def test_errors_name_the_host_and_database_and_clean_the_password() -> None:
    url = DatabaseURL.parse("postgresql://gyre:hunter2@db:5432/models")
    error = unavailable(url, OSError("connection to db failed: password hunter2 refused"))
    assert "cannot reach PostgreSQL database `models` on db:5432 as `gyre`" in str(error)
    assert "hunter2" not in str(error)
    assert mask("postgresql://u@h/db") == "postgresql://u@h/db"  # nothing to hide
    assert mask("postgresql://u:p@[::1/db") == "postgresql://u:***@[::1/db"  # does not parse


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://gyre@db/models?password=hunter2&sslmode=require", "hunter2"),
        ("postgresql://gyre:pa/ss#w?rd@db:5432/models", "pa/ss#w?rd"),
        ("postgresql://gyre:p@ss@db/models", "p@ss"),
    ],
)
def test_a_password_is_masked_however_it_is_written(url: str, secret: str) -> None:
    assert secret not in mask(url) and "***" in mask(url)


def test_a_url_libpq_cannot_read_is_a_config_error_without_the_password(tmp_path: Path) -> None:
    config_file = tmp_path / "gyre.toml"
    for bad in ("postgresql://gyre:SE%zzRET7@db/models", "postgresql://gyre:pa/ss1@db:5432/m"):
        config_file.write_text(f'[store]\nurl = "{bad}"\n')
        with pytest.raises(ConfigError) as caught:
            load_config(tmp_path / "home", config_file)
        assert "SE%zzRET7" not in str(caught.value) and "pa/ss1" not in str(caught.value)
        assert "***" in str(caught.value)


def test_a_url_that_does_not_parse_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"does not parse"):
        DatabaseURL.parse("postgresql://u:secret@[::1/db")
