"""The app's settings are checked at construction, with one set of rules (the library's).

`ServeOptions`, `DemoOptions` and the command line follow the rules of
`AggregatorConfig`: a wrong type raises `TypeError`, a value out of range `ValueError`,
and the message names the field (or, on the command line, the argument).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from trio_aggregator import AggregatorConfig
from trio_aggregator._serve import _options
from trio_aggregator._serve._checks import check_count, check_flag, check_seconds
from trio_aggregator._serve._cli import main
from trio_aggregator._serve._demo import DemoOptions
from trio_aggregator._serve._options import BATCH_MAX_BYTES, BATCH_MAX_ITEMS, ServeOptions

LOOPBACK = ("127.0.0.1", 0)


def serve_options(**kwargs: Any) -> ServeOptions:
    return ServeOptions(tcp=(LOOPBACK,), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"buffer": 1.5}, TypeError, "buffer must be an int, not float"),
        ({"buffer": True}, TypeError, "buffer must be an int, not bool"),
        ({"buffer": 0}, ValueError, "buffer must be >= 1, not 0"),
        ({"backups": 2.0}, TypeError, "backups must be an int, not float"),
        ({"rotate_bytes": 0}, ValueError, "rotate_bytes must be >= 1, not 0"),
        ({"max_line_bytes": "64K"}, TypeError, "max_line_bytes must be an int, not str"),
        ({"max_connections": "many"}, TypeError, "max_connections must be an int, not str"),
        ({"max_connections": 0}, ValueError, "max_connections must be >= 1, not 0"),
        ({"fsync_interval": -1}, ValueError, "fsync_interval must be >= 0, not -1"),
        ({"fsync_interval": math.nan}, ValueError, "fsync_interval must not be NaN"),
        # AggregatorConfig's own rule for sync_interval, at construction, not at run time:
        ({"fsync_interval": math.inf}, ValueError, "fsync_interval must be finite, not inf"),
        ({"drain_timeout": "30"}, TypeError, "drain_timeout must be a number, not str"),
        ({"shutdown_timeout": -0.5}, ValueError, "shutdown_timeout must be >= 0, not -0.5"),
        ({"shutdown_idle": None}, TypeError, "shutdown_idle must be a number, not NoneType"),
        ({"idle_timeout": 0}, ValueError, "idle_timeout must be > 0, not 0"),
        ({"status_interval": False}, TypeError, "status_interval must be a number, not bool"),
        ({"quiet": "yes"}, TypeError, "quiet must be a bool, not str"),
        ({"announce": 1}, TypeError, "announce must be a bool, not int"),
        ({"output": "-", "rotate_bytes": 10}, ValueError, "rotation needs a file output"),
        ({"framing": "syslog"}, ValueError, "framing must be one of 'auto', 'lines', 'oct"),
        ({"nul_terminates": "no"}, TypeError, "nul_terminates must be a bool, not str"),
        ({"binary": "drop"}, ValueError, "binary must be one of 'keep', 'reject', not 'drop'"),
    ],
)
def test_serve_options_are_checked_at_construction(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{message}"):
        serve_options(**kwargs)


def test_serve_options_need_somewhere_to_listen() -> None:
    with pytest.raises(
        ValueError, match="give at least one TCP address, Unix socket path or UDP address"
    ):
        ServeOptions()


def test_serve_options_accept_the_edges() -> None:
    opts = serve_options(
        buffer=1,
        fsync_interval=0,
        drain_timeout=math.inf,  # as AggregatorConfig allows
        shutdown_timeout=0,
        max_connections=None,
        idle_timeout=None,
        status_interval=0.5,
    )
    assert (opts.buffer, opts.fsync_interval, opts.drain_timeout) == (1, 0, math.inf)
    assert ServeOptions(unix=("/tmp/x.sock",)).unix == ("/tmp/x.sock",)


@pytest.mark.parametrize(
    ("option", "setting", "values", "app_only"),
    [
        ("buffer", "buffer_size", [1, 256, 1.5, 2.0, True, "8", None, -1, 0], {0}),
        ("fsync_interval", "sync_interval", [0, 0.5, 3, math.inf, math.nan, "1", True, -1], {-1}),
        ("drain_timeout", "drain_timeout", [0, 30, math.inf, -1.0, math.nan, "5", False], set()),
    ],
)
def test_aggregator_options_follow_aggregator_config_rules(
    option: str, setting: str, values: list[object], app_only: set[object]
) -> None:
    """What AggregatorConfig refuses for a setting, the option refuses the same way.

    The app only adds ranges of its own (*app_only*): a buffer of at least one write
    (0 would be a rendezvous), and no negative fsync interval (0 turns fsync off).
    """
    for value in values:
        try:
            AggregatorConfig(writer=print, **{setting: value})  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc), match=f"^{option} "):
                serve_options(**{option: value})
        else:
            if value in app_only:
                with pytest.raises(ValueError, match=f"^{option} must be >= "):
                    serve_options(**{option: value})
            else:
                assert getattr(serve_options(**{option: value}), option) == value


def test_a_rule_message_without_the_setting_name_is_prefixed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def config(**kwargs: Any) -> None:
        if "sync_interval" in kwargs:
            raise ValueError("not a good interval")

    monkeypatch.setattr(_options, "AggregatorConfig", config)
    with pytest.raises(ValueError, match=r"^fsync_interval: not a good interval$"):
        serve_options()


def test_the_aggregator_config_comes_from_the_options() -> None:
    opts = serve_options(buffer=64, drain_timeout=2.5)
    config = opts.aggregator_config(print, opts.aggregator_config, 0.25)
    assert (config.writer, config.sync_fn, config.sync_interval) == (
        print,
        opts.aggregator_config,
        0.25,
    )
    assert (config.buffer_size, config.drain_timeout) == (64, 2.5)
    assert (config.batch_max_items, config.batch_max_bytes) == (BATCH_MAX_ITEMS, BATCH_MAX_BYTES)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"clients": 0}, ValueError, "clients must be >= 1, not 0"),
        ({"clients": 1.5}, TypeError, "clients must be an int, not float"),
        ({"lines": "10"}, TypeError, "lines must be an int, not str"),
        ({"buffer": 0}, ValueError, "buffer must be >= 1, not 0"),
        ({"keep": "no"}, TypeError, "keep must be a bool, not str"),
        ({"quiet": None}, TypeError, "quiet must be a bool, not NoneType"),
    ],
)
def test_demo_options_are_checked_at_construction(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        DemoOptions(**kwargs)  # type: ignore[arg-type]


def test_the_rules() -> None:
    assert check_count("n", 0, minimum=0) == 0
    assert check_seconds("s", 2) == 2.0
    assert isinstance(check_seconds("s", 2), float)
    assert check_seconds("s", math.inf) == math.inf
    with pytest.raises(ValueError, match=r"^s must be finite, not inf$"):
        check_seconds("s", math.inf, finite=True)
    with pytest.raises(ValueError, match=r"^s must be > 0, not 0$"):
        check_seconds("s", 0, positive=True)
    assert check_flag("f", False) is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--buffer", "0"], "argument --buffer: N must be >= 1, not 0"),
        (
            ["serve", "--max-connections", "-1"],
            "argument --max-connections: N must be >= 0, not -1",
        ),
        (
            ["serve", "--idle-timeout", "-1"],
            "argument --idle-timeout: SECONDS must be >= 0, not -1.0",
        ),
        (["serve", "--drain-timeout", "nan"], "argument --drain-timeout: SECONDS must not be NaN"),
        (
            ["serve", "--shutdown-timeout", "inf"],
            "argument --shutdown-timeout: SECONDS must be finite, not inf",
        ),
        (["serve", "--rotate-bytes", "0"], "argument --rotate-bytes: a size in bytes must be >= 1"),
        (["demo", "--lines", "0"], "argument --lines: N must be >= 1, not 0"),
    ],
)
def test_command_line_values_follow_the_same_rules(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_framing_options_from_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ServeOptions] = []

    async def fake_run_server(options: ServeOptions, **kwargs: object) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr("trio_aggregator._serve._cli.run_server", fake_run_server)
    assert main(["serve", "--tcp", "127.0.0.1:0"]) == 0
    rules = seen[-1].framing_rules()
    assert (rules.framing, rules.nul_terminates, rules.binary) == ("auto", True, "keep")
    argv = ["serve", "--framing", "octet-counted", "--no-nul-terminator", "--binary", "reject"]
    assert main(argv) == 0
    rules = seen[-1].framing_rules()
    assert (rules.framing, rules.nul_terminates, rules.binary) == ("octet-counted", False, "reject")
    assert main(["serve", "--framing", "syslog"]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--forward", "127.0.0.1:0"], "a forward target needs a port in 1..65535, not 0"),
        (
            ["--tcp", "127.0.0.1:5999", "--forward", "127.0.0.1:5999"],
            "forwarding to 127.0.0.1:5999, an address this server listens on, would send",
        ),
        (["--tcp", "0.0.0.0:5999", "--forward", "localhost:5999"], "round in a loop"),
        (["--tcp", "[::]:5999", "--forward", "[::1]:5999"], "round in a loop"),
        (["--forward-tls"], "--forward-tls without --forward: give a target"),
        (
            ["--forward-ca", "ca.pem", "--forward-framing", "lines"],
            "--forward-framing, --forward-ca without --forward",
        ),
        (["--forward-when-full", "block"], "--forward-when-full without --forward"),
        (["--forward-resend", "0"], "--forward-resend without --forward"),
    ],
)
def test_forward_settings_that_cannot_work_are_refused(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One error line, exit status 2: no traceback, no setting silently ignored, no loop."""

    async def never_run(options: ServeOptions, **kwargs: object) -> int:
        raise AssertionError("the server must not start")

    monkeypatch.setattr("trio_aggregator._serve._cli.run_server", never_run)
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert "trio-aggregator serve: error: " in err
    assert message in err
    assert "Traceback" not in err


def test_forward_settings_from_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ServeOptions] = []

    async def fake_run_server(options: ServeOptions, **kwargs: object) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr("trio_aggregator._serve._cli.run_server", fake_run_server)
    assert main(["serve", "--tcp", "127.0.0.1:5140", "--forward", "127.0.0.1:5141"]) == 0
    got = seen[-1]
    assert (got.forward, got.output, got.forward_framing, got.forward_tls) == (
        (("127.0.0.1", 5141),),
        None,
        "lines",
        False,
    )
    assert (got.forward_ca, got.forward_when_full, got.forward_resend) == (None, "block", 1.0)
    argv = ["serve", "--forward", "[::1]:5140", "--forward-ca", "ca.pem", "--forward-resend", "0"]
    assert (
        main([*argv, "--forward-framing", "octet-counted", "--forward-when-full", "drop_newest"])
        == 0
    )
    got = seen[-1]
    assert (got.forward_framing, got.forward_tls, got.forward_ca) == (
        "octet-counted",
        True,
        "ca.pem",
    )
    assert (got.forward_when_full, got.forward_resend) == ("drop_newest", 0.0)
