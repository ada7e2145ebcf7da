"""`Manifest` as data: JSON round trip, the sha-free mirror, and refusal of malformed entries."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmix_edge.runtime.artifact import (
    AgentEntry,
    ArtifactCorruptError,
    Manifest,
    ParityFigures,
    VariantEntry,
    read_verified,
)
from qmix_edge.runtime.tensors import MANIFEST_FORMAT_VERSION

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)
_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
_sha = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@st.composite
def _agent(draw: st.DrawFn, agent_id: str) -> AgentEntry:
    variants = tuple(
        VariantEntry(
            precision=p,
            file=f"{agent_id}.{p}.onnx",
            sha256=draw(_sha),
            size_bytes=draw(st.integers(1, 10**6)),
            action_agreement=draw(_floats),
            max_abs_q_diff=draw(_floats),
            n_steps=draw(st.integers(1, 10**4)),
        )
        for p in draw(st.lists(st.sampled_from(["int8", "fp16"]), unique=True))
    )
    return AgentEntry(
        agent_id=agent_id,
        file=f"{agent_id}.onnx",
        sha256=draw(_sha),
        size_bytes=draw(st.integers(1, 10**6)),
        obs_dim=draw(st.integers(1, 500)),
        n_actions=draw(st.integers(1, 60)),
        recurrent=draw(st.booleans()),
        hidden_dim=draw(st.integers(1, 512)),
        uses_prev_action=draw(st.booleans()),
        fallback_action=0,
        opset=18,
        ir_version=10,
        parity=ParityFigures(
            n_episodes=draw(st.integers(1, 50)),
            n_steps=draw(st.integers(1, 10**4)),
            max_abs_q_diff=draw(_floats),
            near_ties=draw(st.integers(0, 10)),
            q_atol=1e-5,
            tie_tol=2e-5,
            sources=tuple(
                draw(st.lists(st.sampled_from(["env", "synthetic"]), min_size=1, unique=True))
            ),
        ),
        variants=variants,
    )


@st.composite
def _manifest(draw: st.DrawFn) -> Manifest:
    ids = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    return Manifest(
        format_version=MANIFEST_FORMAT_VERSION,
        package_version="0.1.0",
        env_id=draw(_names),
        env_kwargs=draw(
            st.dictionaries(_names, st.integers() | st.booleans() | _names, max_size=3)
        ),
        env_options={"n_agents": len(ids), "episode_limit": draw(st.none() | st.integers(1, 100))},
        agent_ids=tuple(ids),
        agents=tuple(draw(_agent(i)) for i in ids),
        run_id=draw(_names),
        step=draw(st.integers(0, 10**9)),
        network={"kind": draw(st.sampled_from(["mlp", "gru"]))},
    )


def _keys(obj: Any) -> set[str]:
    """Every dict key anywhere inside a JSON value."""
    if isinstance(obj, dict):
        return set(obj).union(*(_keys(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(_keys(v) for v in obj))
    return set()


@settings(max_examples=60, deadline=None)
@given(_manifest())
def test_json_round_trip_and_mirror(m: Manifest) -> None:
    again = Manifest.from_dict(json.loads(m.to_json_bytes()))
    assert again == m
    assert again.to_json_bytes() == m.to_json_bytes()  # canonical bytes: signatures stay valid
    mirror = m.mirror_json()
    # keys, not substrings: a generated run_id may well be the text "size_bytes"
    for agent in json.loads(mirror)["agents"]:
        assert not _keys(agent) & {"sha256", "size_bytes"}
    assert json.loads(mirror) == again.mirror_dict()
    # the mirror does not depend on the file-dependent fields
    a0 = m.agents[0]
    changed = dataclasses.replace(
        m, agents=(dataclasses.replace(a0, sha256="0" * 64, size_bytes=1), *m.agents[1:])
    )
    assert changed.mirror_json() == mirror


def test_mismatched_agent_ids_are_corrupt() -> None:
    d = {
        "format_version": 1,
        "package_version": "0.1.0",
        "env_id": "x",
        "env_kwargs": {},
        "agent_ids": ["a", "b"],
        "agents": [],
        "run_id": "r",
        "step": 0,
    }
    with pytest.raises(ArtifactCorruptError, match="lists agent_ids"):
        Manifest.from_dict(d)
    with pytest.raises(ArtifactCorruptError, match="more than once"):
        Manifest.from_dict({**d, "agent_ids": ["a", "a"]})
    with pytest.raises(ArtifactCorruptError, match="no valid format_version"):
        Manifest.from_dict({**d, "format_version": "one"})


def test_file_entries_cannot_leave_the_artifact(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"x")
    inner = tmp_path / "art"
    inner.mkdir()
    with pytest.raises(ArtifactCorruptError, match="not a plain file name"):
        read_verified(inner, "../secret", "0" * 64)
