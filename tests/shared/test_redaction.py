"""Token values never reach a log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
import pytest
from collab_common import redaction
from collab_common.redaction import SERVER_LOGGERS, RedactTokens, install, redact

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"


@pytest.fixture
def restore_logger_filters() -> Iterator[None]:
    """Undo filters the test adds to loggers and to the root logger's handlers."""
    names = [*SERVER_LOGGERS, "tests.redaction", "tests.redaction.child", "httpx"]
    saved: dict[logging.Filterer, list[Any]] = {
        logging.getLogger(name): list(logging.getLogger(name).filters) for name in names
    }
    saved.update({handler: list(handler.filters) for handler in logging.getLogger().handlers})
    yield
    for target, filters in saved.items():
        target.filters[:] = filters


@contextmanager
def captured(logger: logging.Logger) -> Iterator[io.StringIO]:
    """Messages reaching a handler attached to `logger`, formatted as `%(message)s`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _redact_filters(name: str) -> list[logging.Filter]:
    return [f for f in logging.getLogger(name).filters if isinstance(f, RedactTokens)]


# --- redact() --------------------------------------------------------------------------


def test_query_token_is_removed_and_other_params_are_kept() -> None:
    line = f"GET /ws/docs/a?room=1&token={TOKEN}&mode=edit HTTP/1.1"

    cleaned = redact(line)

    assert TOKEN not in cleaned
    assert cleaned == "GET /ws/docs/a?room=1&token=[redacted]&mode=edit HTTP/1.1"


def test_query_token_at_the_end_of_the_string_is_removed() -> None:
    assert redact(f"/ws/docs/a?token={TOKEN}") == "/ws/docs/a?token=[redacted]"


def test_a_token_under_an_encoded_parameter_name_is_removed() -> None:
    # `tok%65n` decodes to `token`: the query parser accepts it, the name pattern misses it.
    cleaned = redact(f"GET /ws/docs/a?tok%65n={TOKEN}&mode=edit HTTP/1.1")

    assert cleaned == "GET /ws/docs/a?tok%65n=[redacted]&mode=edit HTTP/1.1"


def test_a_jwt_anywhere_in_a_line_is_removed() -> None:
    real = jwt.encode({"sub": "ana", "doc": "notes"}, "s" * 32, algorithm="HS256")

    assert redact(f"odd header x-thing: {real} end") == "odd header x-thing: [redacted] end"


def test_bearer_header_value_is_removed() -> None:
    cleaned = redact(f"Authorization: Bearer {TOKEN}")

    assert cleaned == "Authorization: Bearer [redacted]"


def test_bearer_is_matched_case_insensitively() -> None:
    assert TOKEN not in redact(f"authorization: bearer {TOKEN}")


def test_collab_token_cookie_is_removed_and_other_cookies_are_kept() -> None:
    cleaned = redact(f"Cookie: session=s1; collab_token={TOKEN}; theme=dark")

    assert TOKEN not in cleaned
    assert "session=s1" in cleaned
    assert "theme=dark" in cleaned
    assert "collab_token=[redacted]" in cleaned


def test_collab_token_at_the_end_of_the_string_is_removed() -> None:
    assert redact(f"cookie collab_token={TOKEN}") == "cookie collab_token=[redacted]"


def test_token_inside_quotes_is_removed_without_eating_the_quote() -> None:
    cleaned = redact(f'"WebSocket /ws/docs/a?token={TOKEN}" [accepted]')

    assert cleaned == '"WebSocket /ws/docs/a?token=[redacted]" [accepted]'


@pytest.mark.parametrize(
    "text",
    [
        "",
        "GET /ws/docs/a?room=1&mode=edit HTTP/1.1",
        "upstream http://127.0.0.1:8001 is healthy",
        "tokens are checked; bearer",
        "refused connection from 10.0.0.1 to doc-1: 4401 token expired",
    ],
)
def test_text_without_token_values_is_unchanged(text: str) -> None:
    assert redact(text) == text


# --- the logging filter ----------------------------------------------------------------


def test_filter_rewrites_a_record_logged_with_percent_args(
    caplog: pytest.LogCaptureFixture, restore_logger_filters: None
) -> None:
    logger = logging.getLogger("tests.redaction")
    logger.addFilter(RedactTokens())

    with caplog.at_level(logging.INFO, logger="tests.redaction"):
        logger.info('"WebSocket %s" [accepted]', f"/ws/docs/a?token={TOKEN}")

    assert TOKEN not in caplog.text
    assert '"WebSocket /ws/docs/a?token=[redacted]" [accepted]' in caplog.text
    [record] = caplog.records
    assert record.getMessage() == '"WebSocket /ws/docs/a?token=[redacted]" [accepted]'


def test_filter_leaves_records_without_tokens_untouched() -> None:
    record = logging.LogRecord(
        "tests.redaction", logging.INFO, __file__, 1, "upstream %s is healthy", ("u1",), None
    )

    assert RedactTokens().filter(record) is True
    assert record.msg == "upstream %s is healthy"
    assert record.args == ("u1",)


def test_filter_never_drops_a_record() -> None:
    record = logging.LogRecord(
        "tests.redaction", logging.INFO, __file__, 1, "Bearer %s", (TOKEN,), None
    )

    assert RedactTokens().filter(record) is True
    assert record.getMessage() == "Bearer [redacted]"


# --- install() -------------------------------------------------------------------------


def test_install_attaches_one_filter_to_each_server_logger(restore_logger_filters: None) -> None:
    install()

    for name in SERVER_LOGGERS:
        assert len(_redact_filters(name)) == 1, name


def test_install_is_idempotent(restore_logger_filters: None) -> None:
    install()
    install()
    install("uvicorn.error", "tests.redaction")
    install("tests.redaction")

    for name in [*SERVER_LOGGERS, "tests.redaction"]:
        assert len(_redact_filters(name)) == 1, name


def test_install_with_names_only_touches_those_loggers(restore_logger_filters: None) -> None:
    before = len(_redact_filters("uvicorn.access"))

    redaction.install("tests.redaction")

    assert len(_redact_filters("tests.redaction")) == 1
    assert len(_redact_filters("uvicorn.access")) == before


def test_installed_filter_redacts_uvicorn_handshake_lines(restore_logger_filters: None) -> None:
    install()
    logger = logging.getLogger("uvicorn.error")

    with captured(logger) as output:
        logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", f"/ws/docs/a?token={TOKEN}")

    assert output.getvalue() == (
        '127.0.0.1:5000 - "WebSocket /ws/docs/a?token=[redacted]" [accepted]\n'
    )


def test_install_attaches_the_filter_to_root_handlers_once(restore_logger_filters: None) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        install()
        install()

        assert len([f for f in handler.filters if isinstance(f, RedactTokens)]) == 1
    finally:
        root.removeHandler(handler)


@pytest.mark.parametrize("name", ["httpx", "tests.redaction.child"])
def test_installed_filter_redacts_records_propagated_from_other_loggers(
    name: str, restore_logger_filters: None
) -> None:
    # Logger filters only see records logged on that very logger: a record from any
    # other library reaches the root's handlers by propagation, and must be clean there.
    root = logging.getLogger()
    with captured(root) as output:
        install()
        logger = logging.getLogger(name)
        level = logger.level
        logger.setLevel(logging.INFO)
        try:
            logger.info("HTTP Request: GET %s", f"http://editor/api?room=1&token={TOKEN}")
        finally:
            logger.setLevel(level)

    assert output.getvalue() == "HTTP Request: GET http://editor/api?room=1&token=[redacted]\n"
