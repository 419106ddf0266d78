"""Start-up refusals: bad settings, a missing API-key variable, a model that is not
semantic; each one line from the CLI, before anything listens."""

from __future__ import annotations

import pytest
from PIL import Image

from pixelseg.checkpoints import save_checkpoint
from pixelseg.cli import main
from pixelseg.errors import InvalidInputError
from pixelseg.serve.model_runner import load_runner
from pixelseg.serve.settings import ServeSettings, api_key_from_env


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1, got 0"),
        ({"max_queue": -3}, "max_queue must be an integer >= 1, got -3"),
        ({"max_wait_ms": float("nan")}, "max_wait_ms must be >= 0"),
        ({"timeout_s": 0}, "timeout_s must be > 0, got 0"),
        ({"upload_timeout_s": float("nan")}, "upload_timeout_s must be > 0, got nan"),
        ({"port": 70000}, "port must be in 1..65535"),
        ({"max_pixels": 10**9}, f"Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}"),
        ({"window": (32,)}, "window must be two sizes"),
        ({"api_key": ""}, "api_key is empty"),
        ({"api_key": "clé-42"}, "api_key must be printable ASCII"),
        ({"api_key": "key\n"}, "api_key must be printable ASCII"),
    ],
)
def test_bad_settings_name_the_setting(options, message):
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServeSettings(model="m.pt", **options)


def test_the_api_key_comes_from_a_named_variable(monkeypatch):
    monkeypatch.setenv("PIXELSEG_TEST_KEY", "k-123")
    assert api_key_from_env("PIXELSEG_TEST_KEY") == "k-123"
    assert api_key_from_env(None) is None
    monkeypatch.setenv("PIXELSEG_TEST_KEY", "")
    with pytest.raises(InvalidInputError, match="PIXELSEG_TEST_KEY is empty"):
        api_key_from_env("PIXELSEG_TEST_KEY")
    monkeypatch.delenv("PIXELSEG_TEST_KEY")
    with pytest.raises(InvalidInputError, match="PIXELSEG_TEST_KEY is not set"):
        api_key_from_env("PIXELSEG_TEST_KEY")
    assert ServeSettings(model="m.pt", api_key="k-123").__repr__().count("k-123") == 0


def test_cli_start_up_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PIXELSEG_UNSET_KEY", raising=False)
    instance = save_checkpoint(
        {"model": {}, "model_spec": {"name": "maskrcnn"}, "task": "instance",
         "classes": ["background", "person"]},
        tmp_path / "instance.pt",
    )  # fmt: skip
    cases = [
        (["--model", str(tmp_path / "none.pt")], "does not exist"),
        (["--model", str(instance), "--api-key-env", "PIXELSEG_UNSET_KEY"], "is not set"),
        (["--model", str(instance)], "runs semantic segmentation models"),
        (["--model", str(instance), "--max-batch-size", "0"], "max_batch_size must be"),
        (["--model", str(tmp_path / "m.onnx"), "--device", "cuda"], "runs in onnxruntime"),
    ]
    for args, message in cases:
        assert main(["serve", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, err
    with pytest.raises(InvalidInputError, match="'instance' model"):
        load_runner(ServeSettings(model=instance))


def test_serve_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example: pixelseg serve --model" in out and "--api-key-env" in out
