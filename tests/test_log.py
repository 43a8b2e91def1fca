import json
import logging
from collections.abc import Iterator

import pytest

from tidings import log


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_json_lines_keep_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    log.configure("INFO", "json")
    logging.getLogger("tidings.test").info("applied", extra={"events": 12})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == "applied" and line["events"] == 12 and line["level"] == "info"


def test_text_lines_are_readable(capsys: pytest.CaptureFixture[str]) -> None:
    log.configure("INFO", "text")
    logging.getLogger("tidings.test").warning("slow", extra={"ms": 5})
    err = capsys.readouterr().err
    assert "warning tidings.test: slow" in err and "ms=5" in err


def test_level_filters_lines(capsys: pytest.CaptureFixture[str]) -> None:
    log.configure("WARNING", "text")
    logging.getLogger("tidings.test").info("quiet")
    assert "quiet" not in capsys.readouterr().err


def test_uvicorn_colour_copies_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    log.configure("INFO", "text")
    logging.getLogger("uvicorn.error").info("up", extra={"color_message": "\x1b[1mup\x1b[0m"})
    assert "\x1b" not in capsys.readouterr().err
