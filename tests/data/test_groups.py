"""Group-aware splits: groups never straddle the split; errors name pattern, file, group."""

from __future__ import annotations

import pytest

from pixelseg.data import CAMVID_GROUP_PATTERN, group_split, groups_of
from pixelseg.errors import DataError, InvalidInputError

STEMS = [f"{video}_{frame:03d}" for video, n in (("0001TP", 5), ("0006R0", 3), ("0016E5", 6), ("Seq05VD", 2)) for frame in range(n)]  # fmt: skip


def test_groups_from_the_first_capture_group():
    groups = groups_of(STEMS, CAMVID_GROUP_PATTERN)
    assert sorted(groups) == ["0001TP", "0006R0", "0016E5", "Seq05VD"]
    assert groups["0006R0"] == ["0006R0_000", "0006R0_001", "0006R0_002"]


def test_named_validation_groups():
    split = group_split(STEMS, CAMVID_GROUP_PATTERN, val_groups=["0006R0"])
    assert split.val_groups == ["0006R0"] and split.val == [
        "0006R0_000",
        "0006R0_001",
        "0006R0_002",
    ]
    assert split.train_groups == ["0001TP", "0016E5", "Seq05VD"] and len(split.train) == 13
    assert split.to_json()["how"] == "val_groups ['0006R0']"


def test_fraction_of_groups_is_seeded_and_whole():
    first = group_split(STEMS, CAMVID_GROUP_PATTERN, val_fraction=0.5, seed=3)
    again = group_split(list(reversed(STEMS)), CAMVID_GROUP_PATTERN, val_fraction=0.5, seed=3)
    assert first == again and len(first.val_groups) == 2
    assert not set(first.train_groups) & set(first.val_groups)
    assert sorted(first.train + first.val) == sorted(STEMS)


def test_folds_cover_every_group_once_and_balance_files():
    folds = [
        group_split(STEMS, CAMVID_GROUP_PATTERN, num_folds=2, fold=f, seed=0) for f in range(2)
    ]
    assert sorted(g for s in folds for g in s.val_groups) == sorted(
        groups_of(STEMS, CAMVID_GROUP_PATTERN)
    )
    # Largest-first dealing: 6 + 2 files against 5 + 3.
    assert sorted(len(s.val) for s in folds) == [8, 8]
    one_each = [group_split(STEMS, "^(.*)$", num_folds=4, fold=f).val for f in range(4)]
    assert sorted(s for fold in one_each for s in fold) == sorted(STEMS)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"pattern": "^(zzz)_"}, DataError, r"matches none of the 16 files"),
        (
            {"pattern": "^(0001TP)_"},
            DataError,
            r"does not match the file '0006R0_000'.*groups found: 0001TP",
        ),
        ({"pattern": "^[^_]+_"}, InvalidInputError, "no capture group"),
        ({"pattern": "^(["}, InvalidInputError, "not a regular expression"),
        (
            {"val_groups": ["0099XX"]},
            DataError,
            r"'0099XX'.*groups found: 0001TP, 0006R0, 0016E5, Seq05VD",
        ),
        (
            {"val_groups": ["0001TP", "0006R0", "0016E5", "Seq05VD"]},
            DataError,
            "training side empty",
        ),
        ({"num_folds": 5}, DataError, "cannot make 5 folds from 4 groups"),
    ],
)
def test_bad_splits_name_pattern_file_and_groups(kwargs, error, message):
    pattern = kwargs.pop("pattern", CAMVID_GROUP_PATTERN)
    with pytest.raises(error, match=message):
        group_split(STEMS, pattern, **kwargs)
