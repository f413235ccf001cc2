"""The one reader of users' files: NPY, NPZ and CSV, shared by every command.

Every command that takes a file (`sdekit fit --data`, `sdekit hurst --input`, the
other families' `--data`) reads it here, so that the formats, the spelling of a
missing value and the error messages are the same everywhere:

- **NPY** (`numpy.save`): one array.
- **NPZ** (`numpy.savez`): named arrays ([`sdekit.data.read_npz`][]), or exactly one
    array where one array is asked for ([`sdekit.data.read_array`][]).
- **CSV** (`.csv`; `.tsv` tab-separated; `.txt` comma-separated, or separated by
    spaces as `numpy.savetxt` writes it): a table of numbers, with or without a header
    row. An empty cell or one of [`sdekit.data.MISSING_TOKENS`][] (any case) is a
    missing value (NaN).
"""

import csv
import math
import os
import zipfile
from collections.abc import Iterable, Sequence

import numpy as np


# What users write for "no value" (compared in lower case, after stripping spaces).
MISSING_TOKENS = frozenset(
    {"", "nan", "na", "n/a", "#n/a", "null", "none", "missing", "-", "?"}
)
_TEXT = {".csv": ",", ".tsv": "\t", ".txt": None}
_SUFFIXES = (".npy", ".npz", *_TEXT)


def _where(path, what) -> str:
    # "--data file x.csv": the option the user gave and the file, in every message.
    return f"{what} file {path}" if what else f"file {path}"


def _suffix(path, what, allowed=_SUFFIXES) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{_where(path, what)} not found; check the path.")
    if os.path.isdir(path):
        raise ValueError(f"{_where(path, what)} is a directory; give a file.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in allowed:
        raise ValueError(
            f"{_where(path, what)}: unknown file type {suffix or '(no extension)'!r}; "
            f"use {' or '.join(allowed) if len(allowed) < 3 else ', '.join(allowed)}."
        )
    return suffix


def parse_number(cell: str) -> float | None:
    """A CSV cell as a float: NaN for an empty cell or a missing token, `None` if it
    is not a number."""
    cell = cell.strip()
    if cell.lower() in MISSING_TOKENS:
        return math.nan
    try:
        return float(cell)
    except ValueError:
        return None


def _is_header(row: Sequence[str]) -> bool:
    # A first row with a cell that is neither a number nor a missing token is a
    # header; a row of numbers (or of missing values) is data.
    return any(parse_number(cell) is None for cell in row)


def read_table(
    path: str | os.PathLike, *, what: str = "--data"
) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """The cells of a CSV file as text: `(header, rows)`, `header` `None` when the
    first row holds only numbers and missing values; each row is `(line, cells)`
    with `line` its 1-based line number. Blank lines at the end are dropped; a
    blank line inside a one-column file is a missing value, inside a wider file an
    error. Every row must have as many cells as the first."""
    path = os.fspath(path)
    suffix = _suffix(path, what, tuple(_TEXT))
    where = _where(path, what)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(
            f"{where} is not a text file (not UTF-8); save it as CSV text."
        ) from None
    except OSError as error:
        raise ValueError(f"{where} could not be read: {error.strerror}.") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{where} is empty; it needs at least one row of numbers.")
    delimiter = _TEXT[suffix]
    if delimiter is None:
        delimiter = "," if "," in lines[0] else " "
    if delimiter == " ":
        # numpy.savetxt's layout: fields separated by runs of spaces.
        rows = [line.split() for line in lines]
    else:
        try:
            rows = list(csv.reader(lines, delimiter=delimiter))
        except csv.Error as error:
            raise ValueError(f"{where} is not valid CSV: {error}.") from None
    # The first non-blank row sets the width (the last line is not blank).
    width = len(next(row for row in rows if row))
    numbered = []
    for line, row in enumerate(rows, start=1):
        if not row or (len(row) != width and not "".join(row).strip()):
            if width != 1:
                raise ValueError(
                    f"{where}, line {line} is blank where {width} fields are expected; "
                    "remove the line or fill it with empty fields (missing values)."
                )
            row = [""]
        if len(row) != width:
            raise ValueError(
                f"{where}, line {line} has {len(row)} fields but line 1 has {width}; "
                "every row needs the same number of fields (leave a field empty for "
                "a missing value)."
            )
        numbered.append((line, row))
    header = None
    if _is_header(numbered[0][1]):
        header = [cell.strip() for cell in numbered[0][1]]
        numbered = numbered[1:]
        if not numbered:
            raise ValueError(
                f"{where} has a header row ({', '.join(header)}) but no rows of data."
            )
    return header, numbered


def number_error(path, what, line: int, column: str, cell: str) -> ValueError:
    """The error for a cell that is not a number, naming where it is and the fix."""
    return ValueError(
        f"{_where(os.fspath(path), what)}, line {line}, column {column}: {cell.strip()!r} "
        "is not a number; write numbers, and leave missing values empty or write NaN."
    )


def column_name(header: Sequence[str] | None, index: int) -> str:
    """How an error names column `index` (0-based): its header, else its number."""
    if header is not None and header[index]:
        return f"{index + 1} ({header[index]!r})"
    return str(index + 1)


def _numbers(path, what, header, rows) -> np.ndarray:
    out = np.empty((len(rows), len(rows[0][1])), np.float64)
    for r, (line, row) in enumerate(rows):
        for c, cell in enumerate(row):
            value = parse_number(cell)
            if value is None:
                raise number_error(path, what, line, column_name(header, c), cell)
            out[r, c] = value
    return out


def _as_float(array, path, what, name=None) -> np.ndarray:
    where = _where(path, what) + (f", array {name!r}," if name else "")
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"{where} holds {array.dtype} values, not numbers; save a numeric array."
        )
    if array.size == 0:
        raise ValueError(f"{where} holds an empty array of shape {array.shape}.")
    return np.asarray(array, np.float64)


def _load_npy(path, what) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        # np.load reads anything else as a pickle and would blame pickling.
        if magic != b"\x93NUMPY":
            raise ValueError
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(
                f"{_where(path, what)} holds Python objects, not numbers; save a "
                "numeric array (np.save(path, np.asarray(x, float)))."
            ) from None
        raise ValueError(
            f"{_where(path, what)} is not a readable NPY file; write it with np.save."
        ) from None
    except OSError as error:
        raise ValueError(
            f"{_where(path, what)} could not be read: {error.strerror or error}."
        ) from None


def _open_npz(path, what):
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile):
        raise ValueError(
            f"{_where(path, what)} is not a readable NPZ file; write it with np.savez."
        ) from None


def _npz_array(archive, key, path, what) -> np.ndarray:
    try:
        return archive[key]
    except ValueError:
        raise ValueError(
            f"{_where(path, what)}, array {key!r} holds Python objects; save numbers "
            "or strings (not dtype=object)."
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError):
        raise ValueError(
            f"{_where(path, what)}, array {key!r} could not be read: the file is "
            "damaged; write it again with np.savez."
        ) from None


def read_array(path: str | os.PathLike, *, what: str = "--data") -> np.ndarray:
    """Read one array of numbers from a user's file, as float64, NaN where missing.

    **Arguments:**

    - `path`: a `.npy` file, a `.npz` file holding exactly one array, or a CSV file
        (`.csv`, `.tsv`, `.txt`) with or without a header row; its cells are numbers,
        and empty cells or [`sdekit.data.MISSING_TOKENS`][] are missing (NaN).
    - `what`: how error messages name the file's role (the command-line option).

    **Returns:** the array as stored (NPY, NPZ), or `(rows, columns)` (CSV, the
    header dropped).

    Every problem (no such file, unknown extension, unreadable content, rows of
    different lengths, a cell that is not a number, an empty file) is a one-line
    `ValueError` naming the file, where the problem is and what to do.
    """
    path = os.fspath(path)
    suffix = _suffix(path, what)
    if suffix == ".npy":
        return _as_float(_load_npy(path, what), path, what)
    if suffix == ".npz":
        with _open_npz(path, what) as archive:
            keys = list(archive.files)
            if len(keys) != 1:
                raise ValueError(
                    f"{_where(path, what)} holds {len(keys)} arrays "
                    f"({', '.join(keys) or 'none'}); one array is expected here: save "
                    "just the series (np.save to .npy, or np.savez with one array)."
                )
            return _as_float(_npz_array(archive, keys[0], path, what), path, what)
    header, rows = read_table(path, what=what)
    return _numbers(path, what, header, rows)


def read_npz(
    path: str | os.PathLike,
    *,
    required: Iterable[str] = (),
    optional: Iterable[str] = (),
    what: str = "--data",
) -> dict[str, np.ndarray]:
    """Read named arrays from a user's NPZ file (`numpy.savez`).

    **Arguments:**

    - `path`: a `.npz` file.
    - `required`: names that must be there.
    - `optional`: names that may be there. Any other name is an error (it is most
        often a misspelling, e.g. `time` for `times`).
    - `what`: how error messages name the file's role (the command-line option).

    **Returns:** a dict from name to array for the required names and the optional
    names present. Floating-point arrays come as float64; other arrays (integer or
    text labels) as stored. Python objects (`dtype=object`) are refused.
    """
    path = os.fspath(path)
    required, optional = tuple(required), tuple(optional)
    _suffix(path, what, (".npz",))
    where = _where(path, what)
    with _open_npz(path, what) as archive:
        keys = list(archive.files)
        missing = [k for k in required if k not in keys]
        allowed = required + optional
        unknown = [k for k in keys if k not in allowed]
        if missing or unknown:
            problem = []
            if missing:
                problem.append(f"lacks {', '.join(missing)}")
            if unknown:
                problem.append(f"has unknown {', '.join(unknown)}")
            expected = ", ".join(required) or "none"
            if optional:
                expected += f"; optional: {', '.join(optional)}"
            raise ValueError(
                f"{where} {' and '.join(problem)} (its arrays: "
                f"{', '.join(keys) or 'none'}); expected arrays: {expected}."
            )
        out = {}
        for key in keys:
            array = _npz_array(archive, key, path, what)
            if array.dtype.kind == "f":
                array = array.astype(np.float64)
            out[key] = array
    return out
