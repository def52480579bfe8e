"""Sample rows for a publish's parity check, read from the files the CLI is given."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from gyre.errors import InvalidModel
from gyre.registry import _tabular


def load_sample(path: Path) -> tuple[Any, tuple[str, ...] | None]:
    """Sample rows from `.npy` or `.csv` (a header row of names is optional), and the
    column names. A `.csv` file with a header and non-numeric columns is read as a pandas
    DataFrame (`_tabular.read_csv`): a mixed-type table, one model input per column."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InvalidModel(f"sample file {path} does not exist")
    if suffix == ".npy":
        # Checked first: for other bytes numpy suggests unpickling, which gyre never does.
        with path.open("rb") as file:
            if file.read(6) != b"\x93NUMPY":
                raise InvalidModel(
                    f"sample file {path} is not a .npy file; write the rows with numpy.save, "
                    "or as a .csv file"
                )
        try:
            rows = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InvalidModel(f"sample file {path} is not a numeric .npy array: {exc}") from None
        names = None
    elif suffix == ".csv":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidModel(f"sample file {path} is not UTF-8 text ({exc})") from None
        first = text.split("\n", 1)[0]
        try:
            [float(cell) for cell in first.split(",")]
            names = None
        except ValueError:
            names = tuple(cell.strip() for cell in first.split(","))
            text = text.split("\n", 1)[1] if "\n" in text else ""
        try:
            rows = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError as exc:
            if names is not None:
                return _tabular.read_csv(path), names
            raise InvalidModel(
                f"sample file {path} has non-numeric cells: {exc}; a table with string "
                "columns needs a header row naming its columns"
            ) from None
    else:
        raise InvalidModel(f"sample file {path} must be .npy or .csv, not {suffix or 'no suffix'}")
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise InvalidModel(f"sample file {path} must hold a 2-D table of rows, got {rows.shape}")
    return rows, names
