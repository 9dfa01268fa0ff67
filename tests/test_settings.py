from pathlib import Path

import pytest

from tidings.settings import SettingsError, load_settings


def test_defaults_bind_loopback_in_memory():
    s = load_settings()
    assert (s.host, s.port, s.broker) == ("127.0.0.1", 8600, "memory")


def test_toml_and_environment_are_merged_and_env_wins(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "t.toml"
    cfg.write_text("port = 9000\n[limits]\nidle_timeout = 30\n[namespaces.chat]\nhistory_size = 5\n")
    monkeypatch.setenv("TIDINGS_LIMITS__IDLE_TIMEOUT", "12")
    s = load_settings(cfg)
    assert s.port == 9000 and s.limits.idle_timeout == 12
    assert s.namespace_rules().for_channel("chat:x").history_size == 5
    assert s.namespace_rules().for_channel("other").history_size == 100


def test_every_bad_key_is_named_at_once(tmp_path: Path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('port = "x"\nbroker = "kafka://"\n[limits]\nidle_timeout = -1\nnope = 1\n')
    with pytest.raises(SettingsError) as exc:
        load_settings(cfg)
    keys = {key for key, _ in exc.value.problems}
    assert {"port", "broker", "limits.idle_timeout", "limits.nope"} <= keys


def test_public_bind_without_secrets_is_refused_unless_insecure():
    with pytest.raises(SettingsError, match="not loopback"):
        load_settings(host="0.0.0.0")
    assert load_settings(host="0.0.0.0", insecure=True).insecure
    ok = load_settings(host="0.0.0.0", token_secret="s" * 16, api_key="k" * 16)
    assert ok.host == "0.0.0.0"


def test_missing_config_file_is_reported(tmp_path: Path):
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "absent.toml")


def test_invalid_toml_is_reported(tmp_path: Path):
    cfg = tmp_path / "broken.toml"
    cfg.write_text("port = = 1")
    with pytest.raises(SettingsError, match="TOML"):
        load_settings(cfg)


def test_the_websocket_section_and_its_boolean_form(tmp_path: Path, monkeypatch):
    """``[websocket]`` holds the endpoint's settings; ``websocket = false``, the key's form
    before it was a section, still turns /ws off (file and environment)."""
    assert load_settings().websocket.model_dump() == {
        "enabled": True,
        "compression": True,
        "compression_threshold": 256,
    }
    path = tmp_path / "t.toml"
    path.write_text("websocket = false\n")
    assert load_settings(path).websocket.enabled is False
    path.write_text("[websocket]\ncompression = false\ncompression_threshold = 1024\n")
    section = load_settings(path).websocket
    assert (section.enabled, section.compression, section.compression_threshold) == (True, False, 1024)
    monkeypatch.setenv("TIDINGS_WEBSOCKET", "false")
    assert load_settings().websocket.enabled is False
    monkeypatch.setenv("TIDINGS_WEBSOCKET", '{"compression_threshold": 0}')
    assert load_settings().websocket.compression_threshold == 0
    with pytest.raises(SettingsError, match="compression_threshold"):
        load_settings(websocket={"compression_threshold": -1})


def test_proxies_load_from_toml_and_environment(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        '[proxy]\nmax_concurrency = 8\n[proxy.connect]\nurl = "http://127.0.0.1:8000/c"\n'
        '[proxy.subscribe]\nurl = "http://127.0.0.1:8000/s"\ntimeout = 1.5\n'
        "[namespaces.room]\nsubscribe_proxy = true\n"
    )
    monkeypatch.setenv("TIDINGS_PROXY__RPC__URL", "https://app.example.com/rpc")
    s = load_settings(cfg)
    assert s.proxy.max_concurrency == 8 and s.proxy.publish is None
    assert s.proxy.connect is not None and s.proxy.connect.timeout == 3.0 and s.proxy.connect.skip_with_token
    assert s.proxy.connect.forward_headers == ["Cookie", "Authorization", "X-Request-ID"]
    assert s.proxy.subscribe is not None and s.proxy.subscribe.timeout == 1.5
    assert s.proxy.rpc is not None and s.proxy.rpc.url == "https://app.example.com/rpc"
    assert s.namespace_rules().for_channel("room:a").subscribe_proxy


def test_bad_proxy_settings_are_named(tmp_path: Path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        '[proxy.connect]\nurl = "ftp://x"\ntimeout = 0\nforward_headers = ["bad header"]\n'
        "[proxy.refresh]\ntimeout = 2\n"
    )
    with pytest.raises(SettingsError) as exc:
        load_settings(cfg)
    keys = {key for key, _ in exc.value.problems}
    assert {
        "proxy.connect.url",
        "proxy.connect.timeout",
        "proxy.connect.forward_headers",
        "proxy.refresh.url",
    } <= keys


def test_a_proxied_namespace_needs_its_proxy():
    with pytest.raises(SettingsError, match=r"namespaces.room.publish_proxy needs \[proxy.publish\]"):
        load_settings(namespaces={"room": {"publish_proxy": True}})
