"""`pixelseg data export`: instance sources written as COCO read back to the same instances."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pixelseg.cli import main
from pixelseg.data import (
    CocoInstances,
    CocoPanoptic,
    PennFudan,
    SyntheticInstances,
    SyntheticPanoptic,
)
from pixelseg.data_export import (
    EXPORT_SOURCES,
    PANOPTIC_EXPORT_SOURCES,
    export_dataset,
    instance_source,
    panoptic_source,
)
from pixelseg.errors import DataError, InvalidInputError

PENNFUDAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pennfudan"


def _assert_same_instances(source, coco: CocoInstances) -> None:
    assert len(coco) == len(source)
    for i in range(len(source)):
        expected, got = source[i], coco[i]
        assert got["name"] == expected["name"]
        assert got["image_id"] == expected["image_id"]
        torch.testing.assert_close(got["masks"], expected["masks"], rtol=0, atol=0)
        torch.testing.assert_close(got["labels"], expected["labels"])
        torch.testing.assert_close(got["boxes"], expected["boxes"])
        torch.testing.assert_close(got["area"], expected["area"])
        torch.testing.assert_close(got["image"], expected["image"], rtol=0, atol=0)


def test_shapes_export_reloads_as_the_same_instances(tmp_path: Path) -> None:
    path = export_dataset("shapes", tmp_path, "coco", num=4, size=48, seed=3)
    assert path == tmp_path / "instances.json"
    coco = CocoInstances(tmp_path / "images", path)
    source = SyntheticInstances(4, size=48, seed=3)
    _assert_same_instances(source, coco)
    data = json.loads(path.read_text())
    assert len(data["annotations"]) == sum(len(source[i]["labels"]) for i in range(4))
    assert coco.classes == ["circle", "square", "triangle"]
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]


def test_existing_export_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    export_dataset("shapes", tmp_path, num=1, size=32)
    with pytest.raises(DataError, match="overwrite"):
        export_dataset("shapes", tmp_path, num=1, size=32)
    export_dataset("shapes", tmp_path, num=2, size=32, overwrite=True)
    assert len(CocoInstances(tmp_path / "images", tmp_path / "instances.json")) == 2


@pytest.mark.parametrize(
    ("source", "fmt", "options", "match"),
    [
        ("shape", "coco", {}, r"unknown data source 'shape'.*'shapes'.*pennfudan, shapes"),
        ("shapes", "yolo", {}, r"unknown export format 'yolo'.*Valid choices: coco"),
        ("shapes", "coco", {"split": "val"}, r"'split' does not apply to .*'shapes'.*num"),
        ("pennfudan", "coco", {}, r"'pennfudan' needs root"),
        ("pennfudan", "coco", {"root": "x", "num": 3}, r"'num' does not apply"),
        ("shapes", "coco", {"num": 0}, r"num must be a positive"),
    ],
)
def test_bad_requests_name_the_value_and_the_choices(
    tmp_path: Path, source: str, fmt: str, options: dict, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        export_dataset(source, tmp_path, fmt, **options)
    assert not (tmp_path / "instances.json").exists()


def test_every_source_is_known() -> None:
    assert set(EXPORT_SOURCES) == {"pennfudan", "shapes"}
    assert len(instance_source("shapes", num=2, size=32)) == 2


def test_cli_exports_shapes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "coco"
    argv = ["data", "export", "shapes", "--format", "coco", "--out", str(out)]
    assert main([*argv, "--num", "3", "--size", "32", "--seed", "5"]) == 0
    assert str(out / "instances.json") in capsys.readouterr().out
    coco = CocoInstances(out / "images", out / "instances.json")
    _assert_same_instances(SyntheticInstances(3, size=32, seed=5), coco)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--format", "yolo"], "unknown export format 'yolo'"),
        (["--split", "train"], "'split' does not apply"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, capsys, extra: list[str], match: str) -> None:
    argv = ["data", "export", "shapes", "--out", str(tmp_path / "o"), "--num", "1"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err


def test_cli_pennfudan_without_root_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["data", "export", "pennfudan", "--out", str(tmp_path)]) == 2
    assert "needs root" in capsys.readouterr().err


def test_cli_data_help_shows_the_export_example(capsys) -> None:
    for argv in (["data", "--help"], ["data", "export", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        assert "example: pixelseg data export shapes" in capsys.readouterr().out


@pytest.mark.realdata
def test_pennfudan_export_reloads_as_the_same_instances(tmp_path: Path, capsys) -> None:
    if not PENNFUDAN.is_dir():
        pytest.skip(f"real data {PENNFUDAN} not present (see ../shared/data/README.md)")
    out = tmp_path / "val"
    argv = ["data", "export", "pennfudan", "--root", str(PENNFUDAN), "--split", "val"]
    assert main([*argv, "--out", str(out)]) == 0
    coco = CocoInstances(out / "images", out / "instances.json")
    assert coco.classes == ["pedestrian"]
    _assert_same_instances(PennFudan(PENNFUDAN, split="val"), coco)


def test_shapes_export_as_coco_panoptic_reloads_as_the_same_samples(tmp_path: Path) -> None:
    path = export_dataset("shapes", tmp_path, "coco_panoptic", num=3, size=40, seed=2)
    assert path == tmp_path / "panoptic.json"
    assert sorted(p.name for p in (tmp_path / "panoptic").iterdir()) == [
        f"shape_0000{i}.png" for i in range(3)
    ]
    back = CocoPanoptic(tmp_path / "images", path)
    source = SyntheticPanoptic(3, size=40, seed=2)
    assert back.categories == source.categories
    assert len(back) == 3
    for i in range(3):
        expected, got = source[i], back[i]
        for key in ("image", "boxes", "labels", "masks", "iscrowd", "area", "semantic"):
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
        torch.testing.assert_close(got["panoptic"], expected["panoptic"], rtol=0, atol=0)
        assert got["segments_info"] == expected["segments_info"]
        assert (got["image_id"], got["name"]) == (expected["image_id"], expected["name"])
    with pytest.raises(DataError, match="overwrite"):
        export_dataset("shapes", tmp_path, "coco_panoptic", num=1, size=32)


def test_coco_panoptic_export_of_a_source_without_stuff_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"'pennfudan' has no panoptic form.*: shapes"):
        export_dataset("pennfudan", tmp_path, "coco_panoptic", root="x")
    with pytest.raises(InvalidInputError, match=r"unknown data source 'shape'"):
        export_dataset("shape", tmp_path, "coco_panoptic")
    with pytest.raises(InvalidInputError, match=r"'split' does not apply"):
        export_dataset("shapes", tmp_path, "coco_panoptic", split="val")
    assert PANOPTIC_EXPORT_SOURCES == ("shapes",)
    assert len(panoptic_source("shapes", num=2, size=32)[0]["segments_info"]) >= 2


def test_cli_exports_shapes_as_coco_panoptic(tmp_path: Path, capsys) -> None:
    out = tmp_path / "pan"
    argv = ["data", "export", "shapes", "--format", "coco_panoptic", "--out", str(out)]
    assert main([*argv, "--num", "2", "--size", "32", "--seed", "5"]) == 0
    assert str(out / "panoptic.json") in capsys.readouterr().out
    back = CocoPanoptic(out / "images", out / "panoptic.json")
    torch.testing.assert_close(
        back[1]["panoptic"], SyntheticPanoptic(2, size=32, seed=5)[1]["panoptic"]
    )
