"""`AgentPolicy` / `Manifest`: verified loading, signatures, and every refused input with its message.

The artifact is built with the exporter (torch, in this test process); the runtime itself never
imports torch (see test_policy_no_torch.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from qmix_edge.runtime import policy as policy_module
from qmix_edge.runtime.artifact import (
    SIGNATURE_FILE,
    ArtifactCorruptError,
    ArtifactError,
    ArtifactFormatError,
    ArtifactIntegrityError,
    ArtifactMissingError,
    Manifest,
    SignatureError,
    UnknownAgentError,
)
from qmix_edge.runtime.policy import AgentPolicy, PolicyInputError
from qmix_edge.runtime.tensors import MANIFEST_FILE, TensorNames


@pytest.fixture(scope="module")
def signed_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(artifact dir, public key, private key): a signed GRU artifact with int8 variants."""
    torch = pytest.importorskip("torch")
    from qmix_edge.envs import AgentSpec, EnvSpec
    from qmix_edge.export import export_agent_networks, generate_keypair
    from qmix_edge.train.networks import AgentNetwork

    torch.set_num_threads(1)
    torch.manual_seed(9)
    spec = EnvSpec(
        env_id="policy_test",
        agents=(AgentSpec("agent_0", 6, 4), AgentSpec("agent_1", 3, 2)),
        state_dim=9,
        episode_limit=8,
    )
    net = AgentNetwork(spec, "gru", hidden_dim=16, share_params=False, use_prev_action=True)
    base = tmp_path_factory.mktemp("policy")
    priv, pub = generate_keypair(base / "keys")
    out = base / "art"
    export_agent_networks(
        net, spec, out, sign_key=priv, quantize=["int8"], fallback_actions={"agent_1": 1}
    )
    return out, pub, priv


@pytest.fixture
def artifact(signed_artifact: tuple[Path, Path, Path], tmp_path: Path) -> Path:
    """A private copy the test may damage."""
    copy = tmp_path / "art"
    shutil.copytree(signed_artifact[0], copy)
    return copy


@pytest.fixture(scope="module")
def policy(signed_artifact: tuple[Path, Path, Path]) -> AgentPolicy:
    return AgentPolicy.load(signed_artifact[0], "agent_0", public_key=signed_artifact[1])


def _rewrite_manifest(root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    d = json.loads((root / MANIFEST_FILE).read_text())
    edit(d)
    (root / MANIFEST_FILE).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------ happy path
def test_load_reports_the_manifest(
    policy: AgentPolicy, signed_artifact: tuple[Path, Path, Path]
) -> None:
    m = Manifest.load(signed_artifact[0], public_key=signed_artifact[1])
    assert policy.agent_id == "agent_0"
    assert (policy.obs_dim, policy.n_actions, policy.fallback_action) == (6, 4, 0)
    assert policy.artifact_sha256 == m.agent("agent_0").sha256
    assert policy.manifest == m
    assert AgentPolicy.load(signed_artifact[0], "agent_1").fallback_action == 1


def test_act_carries_state_and_reset_restores_it(policy: AgentPolicy) -> None:
    rng = np.random.default_rng(0)
    episode = [rng.normal(size=6).astype(np.float32) for _ in range(5)]
    policy.reset()
    first = [policy.act(o) for o in episode]
    assert policy.prev_action == first[-1].action
    policy.reset()
    assert policy.prev_action == -1
    again = [policy.act(o) for o in episode]
    for a, b in zip(first, again, strict=True):
        assert a.action == b.action and np.array_equal(a.q_values, b.q_values)
    # the recurrent state matters: the same observation twice in a row gives new Q-values
    policy.reset()
    q1 = policy.act(episode[0]).q_values
    q2 = policy.act(episode[0]).q_values
    assert not np.array_equal(q1, q2)
    assert q1.shape == (4,) and q1.dtype == np.float32


def test_act_equals_a_plain_session_run_step_for_step(
    policy: AgentPolicy, signed_artifact: tuple[Path, Path, Path]
) -> None:
    """`act` runs through onnxruntime I/O binding on fixed buffers (the fast path, which must be
    the one in use with this onnxruntime); it must give exactly what a plain session's ``run``
    gives with the hidden state and previous action carried by hand, resets and masks included."""
    import onnxruntime as ort

    assert policy.uses_io_binding
    entry = policy.manifest.agent("agent_0")
    plain = ort.InferenceSession(str(signed_artifact[0] / entry.file))
    rng = np.random.default_rng(3)
    policy.reset()
    h = np.zeros((1, 16), np.float32)
    prev = -1
    for t in range(24):
        if t == 11:  # an episode boundary
            policy.reset()
            h, prev = np.zeros((1, 16), np.float32), -1
        obs = rng.normal(size=6).astype(np.float32)
        mask = rng.random(4) < 0.6
        mask[rng.integers(4)] = True
        q, a, h = plain.run(
            None,
            {
                TensorNames.OBS: obs[None],
                TensorNames.ACTION_MASK: mask[None],
                TensorNames.PREV_ACTION: np.array([prev], np.int64),
                TensorNames.H_IN: h,
            },
        )
        got = policy.act(obs, mask)
        assert got.action == int(a[0]) and np.array_equal(got.q_values, q[0]), t
        prev = got.action


def test_record_action_overrides_prev_action(policy: AgentPolicy) -> None:
    policy.reset()
    policy.act(np.zeros(6, np.float32))
    policy.record_action(3)
    assert policy.prev_action == 3
    with pytest.raises(PolicyInputError, match="out of range"):
        policy.record_action(4)


def test_float64_observation_is_accepted(policy: AgentPolicy) -> None:
    policy.reset()
    a = policy.act(np.linspace(-1, 1, 6)).q_values
    policy.reset()
    b = policy.act(np.linspace(-1, 1, 6).astype(np.float32)).q_values
    assert np.array_equal(a, b)


def test_int8_variant_loads(signed_artifact: tuple[Path, Path, Path]) -> None:
    p = AgentPolicy.load(signed_artifact[0], "agent_0", precision="int8")
    assert p.precision == "int8"
    assert 0 <= p.act(np.ones(6, np.float32)).action < 4
    with pytest.raises(ArtifactMissingError, match="no fp16 graph"):
        AgentPolicy.load(signed_artifact[0], "agent_0", precision="fp16")


# ------------------------------------------------------------------------- bad artifacts
def test_missing_directory_manifest_and_graph(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactMissingError, match="does not exist"):
        AgentPolicy.load(tmp_path / "nowhere", "agent_0")
    (artifact / "agent_0.onnx").unlink()
    with pytest.raises(ArtifactMissingError, match=r"agent_0\.onnx is listed .* but missing"):
        AgentPolicy.load(artifact, "agent_0")
    (artifact / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactMissingError, match=r"manifest\.json is missing"):
        AgentPolicy.load(artifact, "agent_1")


def test_corrupt_manifest(artifact: Path) -> None:
    (artifact / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ArtifactCorruptError, match="not valid JSON"):
        AgentPolicy.load(artifact, "agent_0")
    (artifact / MANIFEST_FILE).write_text('{"format_version": 1, "agents": []}')
    with pytest.raises(ArtifactCorruptError, match="does not describe an artifact"):
        AgentPolicy.load(artifact, "agent_0")


def test_tampered_graph_is_refused_before_any_session(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions: list[object] = []
    real = policy_module.ort.InferenceSession

    def spy(*args: object, **kwargs: object) -> object:
        sessions.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(policy_module.ort, "InferenceSession", spy)
    data = bytearray((artifact / "agent_0.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (artifact / "agent_0.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"sha256 .* modified or truncated"):
        AgentPolicy.load(artifact, "agent_0")
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        Manifest.load(artifact)  # verify_files=True checks every graph
    assert sessions == []


def test_swapped_graphs_with_rehashed_manifest_are_caught(artifact: Path) -> None:
    """Someone swaps two graphs and fixes the hashes (no signature check): the mirror catches it."""
    a0, a1 = artifact / "agent_0.onnx", artifact / "agent_1.onnx"
    b0, b1 = a0.read_bytes(), a1.read_bytes()
    a0.write_bytes(b1)
    a1.write_bytes(b0)

    def fix(d: dict) -> None:  # type: ignore[type-arg]
        d["agents"][0]["sha256"] = hashlib.sha256(b1).hexdigest()
        d["agents"][1]["sha256"] = hashlib.sha256(b0).hexdigest()

    _rewrite_manifest(artifact, fix)
    with pytest.raises(ArtifactIntegrityError, match=r"inputs|belongs to agent"):
        AgentPolicy.load(artifact, "agent_0")


def test_graph_from_another_export_is_caught(artifact: Path) -> None:
    """A manifest edited after export (here the run id) no longer matches the graphs' mirror."""
    _rewrite_manifest(artifact, lambda d: d.update(run_id="another-run"))
    with pytest.raises(
        ArtifactIntegrityError,
        match=r"comes from another export than manifest\.json \(run_id: manifest\.json "
        r"another-run, graph .*\)\. Re-copy",
    ):
        AgentPolicy.load(artifact, "agent_0")


@pytest.mark.parametrize(
    ("field", "value", "advice"),
    [
        ("fallback_action", 3, r"qmix-export RUN --out DIR --fallback-action agent_0=3"),
        ("obs_dim", 7, r"re-export the run"),
    ],
)
def test_a_hand_edited_manifest_names_the_field_and_what_to_do(
    artifact: Path, field: str, value: int, advice: str
) -> None:
    """Same export, manifest.json edited: the message says so (not "different exports"), names
    the field with both values, and the quote around the agent id is not doubled."""
    _rewrite_manifest(artifact, lambda d: d["agents"][0].update({field: value}))
    with pytest.raises(ArtifactIntegrityError) as info:
        AgentPolicy.load(artifact, "agent_0")
    message = str(info.value)
    assert "although both come from the same export" in message
    assert f"agents[agent_0].{field}: manifest.json {value}, graph " in message
    assert re.search(advice, message), message
    assert "''" not in message


def test_unknown_agent(artifact: Path) -> None:
    with pytest.raises(UnknownAgentError, match=r"'agent_7' is not in this artifact.*agent_0"):
        AgentPolicy.load(artifact, "agent_7")


def test_newer_manifest_format(artifact: Path) -> None:
    _rewrite_manifest(artifact, lambda d: d.update(format_version=d["format_version"] + 1))
    with pytest.raises(ArtifactFormatError, match="newer than this runtime reads"):
        AgentPolicy.load(artifact, "agent_0")


def test_bad_precision_name(artifact: Path) -> None:
    with pytest.raises(ArtifactError, match="precision must be one of"):
        AgentPolicy.load(artifact, "agent_0", precision="int4")


# ------------------------------------------------------------------------------ signatures
def test_signature_round_trip_and_tamper_detection(
    artifact: Path, signed_artifact: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    pub = signed_artifact[1]
    AgentPolicy.load(artifact, "agent_0", public_key=pub)
    AgentPolicy.load(artifact, "agent_0", public_key=pub.read_bytes())
    from qmix_edge.export import generate_keypair

    _, other_pub = generate_keypair(tmp_path / "other")
    with pytest.raises(SignatureError, match="does not verify"):
        AgentPolicy.load(artifact, "agent_0", public_key=other_pub)
    # any edit of the manifest (here a fallback action) breaks the signature
    _rewrite_manifest(artifact, lambda d: d["agents"][0].update(fallback_action=2))
    with pytest.raises(SignatureError, match="does not verify"):
        AgentPolicy.load(artifact, "agent_0", public_key=pub)
    (artifact / SIGNATURE_FILE).unlink()
    with pytest.raises(SignatureError, match="artifact is unsigned"):
        AgentPolicy.load(artifact, "agent_0", public_key=pub)
    with pytest.raises(SignatureError, match="not an Ed25519 public key"):
        AgentPolicy.load(artifact, "agent_0", public_key=b"-----BEGIN PUBLIC KEY-----\nxx\n")


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.filterwarnings("ignore:invalid value encountered in dot:RuntimeWarning")
@pytest.mark.parametrize(
    ("obs", "mask", "match"),
    [
        (np.zeros(5, np.float32), None, r"expects obs of shape \(6,\).*found shape \(5,\)"),
        (np.zeros((1, 6), np.float32), None, r"expects obs of shape \(6,\)"),
        (np.zeros(6, np.int64), None, "expected a float32 observation.*found dtype int64"),
        ([0.0] * 6, None, "expected obs as a numpy array"),
        (np.array([0, 0, np.nan, 0, 0, 0], np.float32), None, r"NaN or inf at indices \[2\]"),
        (
            np.array([0, np.inf, 0, 0, 0, -np.inf], np.float32),
            None,
            r"NaN or inf at indices \[1, 5\]",
        ),
        (np.zeros(6, np.float32), np.zeros(4, bool), "allows no action"),
        (np.zeros(6, np.float32), np.ones(3, bool), r"bool action mask of shape \(4,\)"),
        (np.zeros(6, np.float32), np.ones(4, np.int64), "expected a bool action mask"),
    ],
)
def test_bad_inputs_are_refused(
    policy: AgentPolicy, obs: np.ndarray, mask: np.ndarray | None, match: str
) -> None:
    policy.reset()
    with pytest.raises(PolicyInputError, match=match):
        policy.act(obs, mask)
    assert policy.prev_action == -1  # a refused call changes nothing


@pytest.mark.parametrize(
    ("obs", "mask", "match"),
    [
        (np.zeros(5, np.float32), None, r"expects obs of shape \(6,\)"),
        (np.zeros(6, np.int64), None, "expected a float32 observation"),
        (np.zeros(6, np.float32), np.zeros(4, bool), "allows no action"),
        (np.zeros(6, np.float32), np.ones(3, bool), r"bool action mask of shape \(4,\)"),
    ],
)
def test_known_finite_skips_only_the_finiteness_screen(
    policy: AgentPolicy, obs: np.ndarray, mask: np.ndarray | None, match: str
) -> None:
    policy.reset()
    with pytest.raises(PolicyInputError, match=match):
        policy.act(obs, mask, known_finite=True)
    assert policy.prev_action == -1


def test_known_finite_gives_the_same_decisions(policy: AgentPolicy) -> None:
    episode = [np.linspace(-1, 1, 6, dtype=np.float32) * k for k in range(5)]
    policy.reset()
    screened = [policy.act(o) for o in episode]
    policy.reset()
    trusted = [policy.act(o, known_finite=True) for o in episode]
    assert [r.action for r in screened] == [r.action for r in trusted]
    assert all(
        np.array_equal(a.q_values, b.q_values) for a, b in zip(screened, trusted, strict=True)
    )


def test_large_finite_observation_is_not_mistaken_for_nan(policy: AgentPolicy) -> None:
    policy.reset()
    res = policy.act(np.full(6, 3e37, np.float32))  # overflows a sum or dot-product screen
    assert 0 <= res.action < 4
