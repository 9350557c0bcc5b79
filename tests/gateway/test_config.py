"""GatewayConfig.from_env: defaults, upstream lists, and the errors that name the variable."""

from __future__ import annotations

import os

import pytest
from collab_common.env import ImproperlyConfigured
from gateway.config import GatewayConfig


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("COLLAB_AUTH_REQUIRED", raising=False)
    monkeypatch.delenv("COLLAB_TOKEN_SECRET", raising=False)


def test_defaults_use_one_local_upstream() -> None:
    config = GatewayConfig.from_env()

    assert config.upstreams == ("http://127.0.0.1:8001",)
    assert config.upstream_dns is None
    assert config.host == "127.0.0.1"
    assert config.port == 8000
    assert config.auth_required is False
    assert config.token_secret is None
    assert config.allowed_origins == ()


def test_upstream_list_is_parsed_and_trailing_slashes_stripped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "GATEWAY_UPSTREAMS", "http://10.0.0.1:8001/, https://editor-2.example:443//,,"
    )

    config = GatewayConfig.from_env()

    assert config.upstreams == ("http://10.0.0.1:8001", "https://editor-2.example:443")


def test_dns_upstream_replaces_the_default_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_UPSTREAM_DNS", "editor-headless:8001")

    config = GatewayConfig.from_env()

    assert config.upstream_dns == "editor-headless:8001"
    assert config.upstreams == ()


def test_both_upstream_list_and_dns_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_UPSTREAMS", "http://10.0.0.1:8001")
    monkeypatch.setenv("GATEWAY_UPSTREAM_DNS", "editor-headless:8001")

    with pytest.raises(ImproperlyConfigured) as caught:
        GatewayConfig.from_env()

    assert "GATEWAY_UPSTREAMS" in str(caught.value)
    assert "GATEWAY_UPSTREAM_DNS" in str(caught.value)


def test_dns_upstream_without_a_port_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_UPSTREAM_DNS", "editor-headless")

    with pytest.raises(ImproperlyConfigured, match="GATEWAY_UPSTREAM_DNS"):
        GatewayConfig.from_env()


@pytest.mark.parametrize("url", ["ws://10.0.0.1:8001", "10.0.0.1:8001", "ftp://x"])
def test_non_http_upstream_is_an_error_naming_the_variable(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_UPSTREAMS", f"http://10.0.0.1:8001,{url}")

    with pytest.raises(ImproperlyConfigured) as caught:
        GatewayConfig.from_env()

    assert "GATEWAY_UPSTREAMS" in str(caught.value)
    assert url in str(caught.value)


def test_auth_required_without_a_secret_is_an_error_naming_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLLAB_AUTH_REQUIRED", "1")

    with pytest.raises(ImproperlyConfigured, match="COLLAB_TOKEN_SECRET"):
        GatewayConfig.from_env()


def test_auth_required_with_a_secret_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_AUTH_REQUIRED", "true")
    monkeypatch.setenv("COLLAB_TOKEN_SECRET", "x" * 32)

    config = GatewayConfig.from_env()

    assert config.auth_required is True
    assert config.token_secret == "x" * 32


def test_numeric_settings_are_read_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9100")
    monkeypatch.setenv("GATEWAY_RATE_BURST", "5")
    monkeypatch.setenv("GATEWAY_ALLOWED_ORIGINS", "https://a.example, https://b.example")

    config = GatewayConfig.from_env()

    assert config.port == 9100
    assert config.rate_burst == 5
    assert config.allowed_origins == ("https://a.example", "https://b.example")


def test_bad_numeric_setting_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MAX_FRAME_BYTES", "100")

    with pytest.raises(ImproperlyConfigured, match="GATEWAY_MAX_FRAME_BYTES"):
        GatewayConfig.from_env()


@pytest.mark.parametrize("origin", ["https://a.example/", "a.example", "https://a.example/app"])
def test_an_origin_that_no_header_can_equal_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, origin: str
) -> None:
    # Origins are compared exactly with the header (as COLLAB_ALLOWED_ORIGINS at the editor).
    monkeypatch.setenv("GATEWAY_ALLOWED_ORIGINS", f"https://ok.example,{origin}")

    with pytest.raises(ImproperlyConfigured, match="GATEWAY_ALLOWED_ORIGINS"):
        GatewayConfig.from_env()
