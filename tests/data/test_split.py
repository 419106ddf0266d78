from __future__ import annotations

import logging

import pytest

from pixelseg.data import random_partition, random_split, read_split_file
from pixelseg.errors import DataError, InvalidInputError


def test_read_split_file_skips_blank_and_comments_and_reduces_paths(tmp_path, caplog):
    path = tmp_path / "train.txt"
    path.write_text(
        "# comment\n"
        "2007_000032\n"
        "\n"
        "  2007_000039  \n"
        "train/0001TP_006690.png trainannot/0001TP_006690.png\n"
        "img_7.JPG\n"
        "2007_000032\n"
    )
    with caplog.at_level(logging.WARNING):
        stems = read_split_file(path)
    assert stems == ["2007_000032", "2007_000039", "0001TP_006690", "img_7"]
    assert "duplicate" in caplog.text


def test_read_split_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing\.txt"):
        read_split_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(DataError, match=r"empty\.txt.*no stems"):
        read_split_file(empty)


def test_random_split_is_deterministic_and_order_independent():
    stems = [f"s{i:03d}" for i in range(50)]
    train, val = random_split(stems, val_fraction=0.2, seed=7)
    assert len(val) == 10 and len(train) == 40
    assert set(train) | set(val) == set(stems) and not set(train) & set(val)
    # Same seed, shuffled input order -> same split; another seed -> another split.
    assert random_split(list(reversed(stems)), 0.2, seed=7) == (train, val)
    assert random_split(stems, 0.2, seed=8)[1] != val
    assert train == sorted(train) and val == sorted(val)


def test_random_split_edge_cases():
    assert random_split(["a", "b", "c"], val_fraction=0.0) == (["a", "b", "c"], [])
    # A tiny positive fraction still yields one validation stem.
    train, val = random_split(["a", "b", "c"], val_fraction=0.01)
    assert len(val) == 1 and len(train) == 2
    with pytest.raises(InvalidInputError, match="val_fraction"):
        random_split(["a"], val_fraction=1.0)
    with pytest.raises(InvalidInputError, match="cannot split 1"):
        random_split(["a"], val_fraction=0.5)


def test_random_partition_sizes():
    stems = [str(i) for i in range(10)]
    parts = random_partition(stems, [0.7, 0.2, 0.1], seed=0)
    assert [len(p) for p in parts] == [7, 2, 1]
    assert sorted(s for part in parts for s in part) == sorted(stems)
    with pytest.raises(InvalidInputError, match="sum to 1"):
        random_partition(stems, [0.5, 0.2])
    with pytest.raises(InvalidInputError, match="non-negative"):
        random_partition(stems, [1.5, -0.5])
