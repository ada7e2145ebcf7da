"""The one-declaration generator: parser, --help and child command lines from a frozen dataclass."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qmix_edge.common.settings import (
    SettingError,
    build_parser,
    docs,
    from_namespace,
    setting,
    to_argv,
)

Mode = Literal["simulation", "field"]


@dataclass(frozen=True)
class Options:
    artifacts: str = setting("", "Artifact folder.", required=True)
    mode: Mode = setting("simulation", "How to run: simulation or field.", group="run")
    episodes: int = setting(1, "Episodes to run; 0 = until stopped.", group="run")
    deadline_s: float = setting(0.5, "Step deadline in seconds (50% of a period).")
    limit: int | None = setting(None, "Steps per episode; none = the env's.")
    lane: bool = setting(True, "Serve the step lane.")
    insecure: bool = setting(False, "Allow plain text.")
    record: str | None = setting(None, "Record file.")
    out: Path = setting(Path("reports"), "Output folder.")
    kwargs: dict = setting(default_factory=dict, doc="Env keyword arguments as JSON.")
    ids: tuple[str, ...] = setting(
        (),
        "Agent ids, comma separated.",
        parse=lambda t: tuple(x for x in t.split(",") if x),
        show=",".join,
    )
    library_only: int = setting(3, "Not a flag.", cli=False)


def parse(argv: list[str]) -> Options:
    return from_namespace(Options, build_parser(Options, "prog").parse_args(argv))


def test_defaults_and_types_come_from_the_declaration() -> None:
    o = parse(["--artifacts", "a"])
    assert o == Options(artifacts="a")
    flags = "--artifacts a --mode field --limit 25 --no-lane --insecure --ids x,y --deadline-s 0.25"
    o = parse([*flags.split(), "--kwargs", '{"N": 4}'])
    assert (o.mode, o.limit, o.lane, o.insecure) == ("field", 25, False, True)
    assert (o.kwargs, o.ids, o.deadline_s) == ({"N": 4}, ("x", "y"), 0.25)
    assert parse(["--artifacts", "a", "--limit", "none"]).limit is None


def test_bad_values_and_missing_required_flags_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["--mode", "field"], ["--artifacts", "a", "--mode", "fly"]):
        with pytest.raises(SystemExit) as e:
            parse(argv)
        assert e.value.code == 2
    with pytest.raises(SystemExit):
        parse(["--artifacts", "a", "--kwargs", "[1]"])
    assert "expected a JSON object" in capsys.readouterr().err


def test_help_shows_every_doc_and_default_without_reading_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import inspect

    def no_source(*a: object, **k: object) -> str:
        raise OSError("no source on this install")

    monkeypatch.setattr(inspect, "getsource", no_source)
    text = build_parser(Options, "prog").format_help()
    for name, doc in docs(Options).items():
        if name != "library_only":
            assert doc.split(";")[0].split("(")[0].strip() in " ".join(text.split())
    assert "--library-only" not in text
    assert "(default: 1)" in text and "--no-lane" in text


@given(
    mode=st.sampled_from(["simulation", "field"]),
    episodes=st.integers(0, 10**6),
    deadline=st.floats(0.001, 1e4, allow_nan=False),
    limit=st.none() | st.integers(1, 10**4),
    lane=st.booleans(),
    insecure=st.booleans(),
    record=st.none() | st.text("abc/._-", min_size=1, max_size=12).filter(lambda s: s != "--"),
    ids=st.lists(st.text("abcdef_0123", min_size=1, max_size=5), max_size=3).map(tuple),
)
def test_to_argv_reads_back_the_same_value(
    mode: Mode,
    episodes: int,
    deadline: float,
    limit: int | None,
    lane: bool,
    insecure: bool,
    record: str | None,
    ids: tuple[str, ...],
) -> None:
    o = Options(
        artifacts="arts",
        mode=mode,
        episodes=episodes,
        deadline_s=deadline,
        limit=limit,
        lane=lane,
        insecure=insecure,
        record=record,
        kwargs={"N": episodes},
        ids=ids,
    )
    assert parse(to_argv(o)) == o
    assert parse(to_argv(o, all_fields=True)) == o


def test_to_argv_leaves_out_defaults_but_never_a_required_flag() -> None:
    assert to_argv(Options(artifacts="a")) == ["--artifacts=a"]


def test_an_undeclarable_field_is_a_bug_named_at_parser_build() -> None:
    @dataclass(frozen=True)
    class Bad:
        things: list[int] = setting(default_factory=list, doc="no form")

    with pytest.raises(SettingError, match=r"Bad\.things"):
        build_parser(Bad, "prog")


def test_suppressed_defaults_leave_unset_flags_out() -> None:
    p = argparse.ArgumentParser()
    from qmix_edge.common.settings import add_settings

    add_settings(p, Options, suppress_defaults=True, exclude=["artifacts"])
    assert vars(p.parse_args(["--episodes", "3"])) == {"episodes": 3}


NAMES = {"mlp": "a feed-forward net", "gru": "a recurrent net"}


@dataclass(frozen=True)
class Registered:
    net: str = setting("mlp", "Which network.", choices=NAMES)
    extra: Mapping[str, object] = setting(default_factory=dict, doc="Options as JSON.")


def test_choices_from_a_registry_and_mapping_fields(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser(Registered, "prog")
    got = from_namespace(Registered, parser.parse_args(["--net", "gru", "--extra", '{"k": 1}']))
    assert got == Registered(net="gru", extra={"k": 1})
    assert to_argv(got) == ["--net=gru", '--extra={"k": 1}']
    with pytest.raises(SystemExit):
        parser.parse_args(["--net", "lstm"])
    assert "invalid choice: 'lstm' (choose from" in capsys.readouterr().err
    NAMES["lstm"] = "added later"  # a registry given as the choices is read when a parser is built
    try:
        assert build_parser(Registered, "prog").parse_args(["--net", "lstm"]).net == "lstm"
    finally:
        del NAMES["lstm"]
