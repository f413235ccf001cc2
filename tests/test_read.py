"""sdekit.data's one reader of users' files: NPY, NPZ, CSV, missing values, errors."""

import numpy as np
import pytest

import sdekit.data as sd


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(7, 3))
    values[2, 1] = np.nan
    values[5, 0] = np.nan
    return values


def _write_csv(path, values, header=None, delimiter=",", missing=""):
    lines = [] if header is None else [delimiter.join(header)]
    for row in values:
        cells = [missing if np.isnan(v) else repr(float(v)) for v in row]
        lines.append(delimiter.join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def _same(a, b):
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(a[~np.isnan(a)], b[~np.isnan(b)])


def test_every_format_reads_the_same_numbers(tmp_path, table):
    np.save(tmp_path / "x.npy", table.astype(np.float32))
    np.savez(tmp_path / "x.npz", series=table)
    np.savetxt(tmp_path / "x.txt", table)  # spaces, "nan"
    reads = [
        sd.read_array(tmp_path / "x.npz"),
        sd.read_array(_write_csv(tmp_path / "a.csv", table)),
        sd.read_array(_write_csv(tmp_path / "b.csv", table, header=["u", "v", "w"])),
        sd.read_array(_write_csv(tmp_path / "c.tsv", table, delimiter="\t")),
        sd.read_array(tmp_path / "x.txt"),
    ]
    for got in reads:
        assert got.dtype == np.float64 and got.shape == (7, 3)
        _same(got, table)
    # float32 storage: converted exactly to float64.
    got = sd.read_array(tmp_path / "x.npy")
    assert got.dtype == np.float64
    _same(got, table.astype(np.float32).astype(np.float64))


@pytest.mark.parametrize("token", sorted(sd.MISSING_TOKENS))
def test_missing_tokens_are_nan(tmp_path, token):
    # Any case, with spaces around: one set of tokens for every command.
    for spelling in {token, token.upper(), f" {token.title()} "}:
        path = tmp_path / "x.csv"
        path.write_text(f"value\n1.5\n{spelling}\n-2\n")
        got = sd.read_array(path)
        assert got.shape == (3, 1)
        assert np.isnan(got[1, 0]) and got[0, 0] == 1.5 and got[2, 0] == -2


def test_one_column_blank_lines_and_excel_bom(tmp_path):
    path = tmp_path / "x.csv"
    # A blank line inside one column is a missing value; blank lines at the end are
    # not data. Excel writes a byte-order mark.
    path.write_bytes("\ufeffvalue\n1\n\n3\n\n\n".encode())
    got = sd.read_array(path)
    assert got.shape == (3, 1)
    assert got[0, 0] == 1 and np.isnan(got[1, 0]) and got[2, 0] == 3
    # A row of numbers is data, not a header.
    path.write_text("1,2,3\n4,,6\n")
    got = sd.read_array(path)
    assert got.shape == (2, 3) and np.isnan(got[1, 1])


def test_read_table_keeps_text_cells(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("series,time,x\na,0,1\nb,1,\n")
    header, rows = sd.read_table(path)
    assert header == ["series", "time", "x"]
    assert rows == [(2, ["a", "0", "1"]), (3, ["b", "1", ""])]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.csv", "", "is empty"),
        ("x.csv", "\n\n", "is empty"),
        ("x.csv", "a,b\n", "header row (a, b) but no rows"),
        ("x.csv", "1,2\n3\n", "line 2 has 1 fields but line 1 has 2"),
        ("x.csv", "1,2\n\n3,4\n", "line 2 is blank where 2 fields"),
        ("x.csv", "t,value\n0,1\n1,abc\n", "line 3, column 2 ('value'): 'abc'"),
        ("x.csv", "1\n2\nx7\n", "line 3, column 1: 'x7' is not a number"),
        ("x.parquet", "1", "unknown file type '.parquet'; use .npy, .npz"),
        ("x", "1", "unknown file type '(no extension)'"),
        ("x.npy", "not an npy file", "not a readable NPY file"),
        ("x.npz", "not a zip", "not a readable NPZ file"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError) as error:
        sd.read_array(path, what="--input")
    text = str(error.value)
    assert "\n" not in text and message in text, text
    # The message names the option and the file.
    assert text.startswith(f"--input file {path}")


def test_bad_arrays_are_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "s.npy", np.array(["1", "2"]))
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.ones(3))
    for name, message in [
        ("o.npy", "Python objects"),
        ("s.npy", "not numbers"),
        ("e.npy", "empty array of shape (0, 3)"),
        ("two.npz", "holds 2 arrays (a, b); one array is expected"),
        ("nothere.npy", "not found"),
    ]:
        with pytest.raises(ValueError) as error:
            sd.read_array(tmp_path / name)
        assert message in str(error.value) and str(tmp_path / name) in str(error.value)
    with pytest.raises(ValueError, match="is a directory"):
        sd.read_array(tmp_path)


def test_read_npz(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(
        path,
        values=np.ones((2, 3), np.float32),
        times=np.arange(3),
        labels=np.array(["a", "b"]),
    )
    got = sd.read_npz(path, required=("values",), optional=("times", "labels", "split"))
    assert set(got) == {"values", "times", "labels"}
    assert got["values"].dtype == np.float64  # floats widened
    assert got["times"].dtype.kind == "i" and got["labels"].dtype.kind == "U"
    with pytest.raises(ValueError) as error:
        sd.read_npz(path, required=("values", "ys"), optional=("times", "labels"))
    text = str(error.value)
    assert "lacks ys" in text and "its arrays: values, times, labels" in text
    with pytest.raises(ValueError, match="has unknown labels"):
        sd.read_npz(path, required=("values",), optional=("times",))
    np.savez(path, values=np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match="array 'values' holds Python objects"):
        sd.read_npz(path, required=("values",))
    np.save(tmp_path / "d.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"unknown file type '\.npy'; use \.npz\."):
        sd.read_npz(tmp_path / "d.npy", required=("values",))
