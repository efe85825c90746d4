"""read_user_table: a user's --labels / --pairs file read by extension, text kept as text, repeated names refused."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.user_files import read_user_table


@pytest.mark.parametrize("suffix,sep", [(".csv", ","), (".CSV", ","), (".tsv", "\t")])
def test_csv_and_tsv_repeating_a_name_are_refused_naming_it(tmp_path, suffix, sep):
    p = tmp_path / f"pairs{suffix}"
    p.write_text(sep.join(["title", "label", "keyphrase", "label", "title"]) + "\n" + sep.join("abcde") + "\n")
    with pytest.raises(DataError, match=r"^--labels \S+: column name\(s\) \['label', 'title'\] appear more than once"):
        read_user_table(str(p), "--labels")


@pytest.mark.parametrize("content,message", [
    # the BOM is not part of the first name
    ("\ufefftitle,keyphrase,title\r\na,b,c\r\n".encode("utf-8"), r"\['title'\] appear more than once in the header"),
    # the header is the line pandas takes, after blank ones
    ("\ufeff\r\n   \r\ntitle,keyphrase,label,label\r\na,b,1,0\r\n".encode("utf-8"),
     r"\['label'\] appear more than once in the header"),
    # a spreadsheet's legacy encoding
    ("title,keyphrase,label\ncaf\u00e9 mug,mug,1\n".encode("cp1252"),
     r"cannot read \(UnicodeDecodeError: .*\); the file is not UTF-8: save it as UTF-8"),
], ids=["bom", "blank-lines", "cp1252"])
def test_what_a_spreadsheet_writes_is_refused_with_the_reason(tmp_path, content, message):
    p = tmp_path / "excel.csv"
    p.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_user_table(str(p), "--labels")


def test_unnamed_columns_are_not_repeated_names(tmp_path):
    """A spreadsheet's trailing or spacer separators leave columns without a name: pandas names them apart."""
    p = tmp_path / "excel.csv"
    p.write_text("title,,keyphrase,label,,\na,,b,1,,\n")
    df = read_user_table(str(p), "--labels")
    assert df[["title", "keyphrase", "label"]].to_dict("list") == {"title": ["a"], "keyphrase": ["b"], "label": ["1"]}
    assert len(df.columns) == 6


def test_parquet_repeating_a_name_is_refused_naming_it(tmp_path):
    p = tmp_path / "pairs.parquet"
    names = ["title", "keyphrase", "title", "label"]
    pq.write_table(pa.table([pa.array(["x"])] * 4, names=names), p)  # pyarrow writes it without complaint
    with pytest.raises(DataError, match=r"--pairs .*: column name\(s\) \['title'\] appear more than once"):
        read_user_table(str(p), "--pairs")


@pytest.mark.parametrize("partitioned", [False, True])
def test_a_parquet_dataset_directory_is_read(tmp_path, partitioned):
    df = pd.DataFrame({"title": ["a", "b", "c"], "keyphrase": ["x", "y", "z"], "category": ["k", "k", "m"]})
    d = tmp_path / "pairs.parquet"
    df.to_parquet(d, partition_cols=["category"] if partitioned else None) if partitioned else (
        d.mkdir(), df.iloc[:2].to_parquet(d / "part-0.parquet"), df.iloc[2:].to_parquet(d / "part-1.parquet"))
    out = read_user_table(str(d), "--pairs")
    assert sorted(out["title"]) == ["a", "b", "c"] and set(out.columns) == {"title", "keyphrase", "category"}


def test_a_dataset_whose_partition_repeats_a_column_is_refused_without_the_extension_hint(tmp_path):
    d = tmp_path / "pairs"
    (d / "label=1").mkdir(parents=True)
    pd.DataFrame({"title": ["a"], "label": [0]}).to_parquet(d / "label=1" / "part-0.parquet")
    with pytest.raises(DataError, match=r"^--labels \S+pairs: cannot read \(Arrow\w+: [^;]*label[^;]*\)$"):
        read_user_table(str(d), "--labels")


def test_text_stays_text_and_a_byte_order_mark_is_dropped(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes("\ufefftitle,keyphrase,label\r\n007 agent,NA,1e3\r\nnull,,0\r\n".encode("utf-8"))
    df = read_user_table(str(p), "--labels")
    assert df.columns.tolist() == ["title", "keyphrase", "label"]
    assert df.to_dict("list") == {"title": ["007 agent", "null"], "keyphrase": ["NA", ""], "label": ["1e3", "0"]}


def test_tsv_keeps_commas_in_a_value(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("title\tkeyphrase\nmug, red\tred mug\n")
    assert read_user_table(str(p), "--labels").to_dict("list") == {"title": ["mug, red"], "keyphrase": ["red mug"]}


def test_parquet_is_read_as_stored(tmp_path):
    p = tmp_path / "pairs.pq"
    pd.DataFrame({"title": ["a"], "label": [1]}).to_parquet(p)
    df = read_user_table(str(p), "--pairs")
    assert df["label"].tolist() == [1] and df["label"].dtype.kind == "i"


def test_missing_unreadable_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match=r"^--labels .*nope\.csv: no such file$"):
        read_user_table(str(tmp_path / "nope.csv"), "--labels")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match=r"cannot read \(\w+: .*\)$"):  # no hint: the extension says parquet
        read_user_table(str(bad), "--labels")
    txt = tmp_path / "pairs.txt"
    txt.write_text("title,label\na,1\n")
    with pytest.raises(DataError, match=r"a file named \.txt is read as parquet: name a CSV file \.csv"):
        read_user_table(str(txt), "--labels")
    bare = tmp_path / "pairs"
    bare.write_text("title,label\na,1\n")
    with pytest.raises(DataError, match="a file named without an extension is read as parquet"):
        read_user_table(str(bare), "--labels")
