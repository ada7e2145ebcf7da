"""The artifact a device receives: the manifest, its integrity checks, and the ArtifactError family.

An artifact directory holds ``manifest.json``, one ``<agent_id>.onnx`` per agent, optional
reduced-precision variants (``<agent_id>.int8.onnx``, ``<agent_id>.fp16.onnx``) and optionally
``manifest.sig`` (an Ed25519 signature over the exact bytes of ``manifest.json``). The manifest
lists every file with its sha256, so one signature covers every graph.

Each graph carries the manifest in its ``metadata_props`` (key `METADATA_MANIFEST_KEY`) so that a
graph alone explains itself. A file cannot contain its own hash (or its own final size), so the
mirrored copy is the manifest with every ``sha256`` and ``size_bytes`` field removed
(`Manifest.mirror_dict`); a device checks that a graph's
mirror equals the manifest it loaded (`Manifest.check_mirror`) after the graph's bytes were hashed.

No torch and no ``onnx`` package here: this module is imported on devices with the base install
(numpy, onnxruntime; cryptography only when a public key is given).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

if TYPE_CHECKING:  # cryptography is imported only when a public key is given (~7 MiB per agent)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import RuntimeFailure
from .tensors import MANIFEST_FILE, MANIFEST_FORMAT_VERSION

SIGNATURE_FILE: Final = "manifest.sig"
"""The detached Ed25519 signature over the bytes of ``manifest.json`` (64 raw bytes)."""
METADATA_MANIFEST_KEY: Final = "qmix_edge.manifest"
"""``metadata_props`` key of the mirrored manifest (JSON, ``sha256``/``size_bytes`` removed)."""
METADATA_AGENT_KEY: Final = "qmix_edge.agent_id"
"""``metadata_props`` key naming the agent a graph belongs to."""
METADATA_PRECISION_KEY: Final = "qmix_edge.precision"
"""``metadata_props`` key naming the graph's precision (``fp32``, ``int8``, ``fp16``)."""

Precision = Literal["fp32", "int8", "fp16"]
PRECISIONS: Final[tuple[str, ...]] = ("fp32", "int8", "fp16")
"""fp32 is the graph the parity gate checked and what the runtime uses by default."""


# --------------------------------------------------------------------------------------- errors
class ArtifactError(RuntimeFailure):
    """Base class: the artifact cannot be used as it is. Nothing was loaded."""


class ArtifactMissingError(ArtifactError, FileNotFoundError):
    """The artifact directory, the manifest, a graph or the signature file does not exist."""


class ArtifactCorruptError(ArtifactError):
    """A file exists but cannot be parsed (bad JSON, missing fields, a graph onnxruntime rejects)."""


class ArtifactFormatError(ArtifactError):
    """The manifest was written in a newer format than this runtime reads."""


class ArtifactIntegrityError(ArtifactError):
    """A file's sha256 does not match the manifest, or a graph disagrees with the manifest."""


class SignatureError(ArtifactError):
    """The Ed25519 signature is missing, malformed, or does not verify with the given key."""


class UnknownAgentError(ArtifactError, KeyError):
    """The requested agent id is not in the manifest."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# ------------------------------------------------------------------------------------ manifest
@dataclass(frozen=True)
class ParityFigures:
    """What the export's parity gate measured for one agent (torch vs onnxruntime)."""

    n_episodes: int
    """Recorded episodes replayed (hidden state reset at each episode start)."""
    n_steps: int
    """Recorded steps replayed one by one (batch 1, state carried), summed over episodes."""
    max_abs_q_diff: float
    """Largest |Q_torch - Q_onnx| over all steps and the agent's own actions."""
    near_ties: int
    """Steps whose greedy actions differed only because their Q-values were within ``tie_tol``."""
    q_atol: float
    """The absolute Q-value tolerance the gate enforced."""
    tie_tol: float
    """Q gap below which two actions count as a near-tie."""
    sources: tuple[str, ...]
    """Where the observations came from: ``env`` (real env rollouts) and/or ``synthetic``."""
    q_rtol: float = 0.0
    """Relative Q tolerance: a step passes when |dQ| <= q_atol + q_rtol * |Q_torch|."""


@dataclass(frozen=True)
class VariantEntry:
    """A reduced-precision copy of an agent's graph, with its measured agreement with fp32."""

    precision: str
    """``int8`` (onnxruntime dynamic quantization) or ``fp16`` (weights stored in half precision)."""
    file: str
    """File name inside the artifact directory."""
    sha256: str
    """Hex sha256 of the file's bytes."""
    size_bytes: int
    """File size."""
    action_agreement: float
    """Fraction of recorded steps where the variant's greedy action equals fp32's (0..1)."""
    max_abs_q_diff: float
    """Largest |Q_variant - Q_fp32| on the recorded steps."""
    n_steps: int
    """Recorded steps the agreement was measured on."""


@dataclass(frozen=True)
class AgentEntry:
    """One agent's graph and everything a device needs to run it."""

    agent_id: str
    """The agent's id (PettingZoo name), e.g. ``agent_0``."""
    file: str
    """The fp32 graph's file name inside the artifact directory."""
    sha256: str
    """Hex sha256 of the fp32 graph's bytes."""
    size_bytes: int
    """Size of the fp32 graph."""
    obs_dim: int
    """The agent's true observation length (``obs`` is ``[batch, obs_dim]``)."""
    n_actions: int
    """The agent's action count (``q_values`` is ``[batch, n_actions]``)."""
    recurrent: bool
    """Whether the graph has ``h_in``/``h_out`` (GRU agent)."""
    hidden_dim: int
    """Width of the recurrent state (and the hidden layers)."""
    uses_prev_action: bool
    """Whether the graph takes ``prev_action`` (-1 at episode start)."""
    fallback_action: int
    """The action to apply when no decision arrives in time (0 unless configured at export)."""
    opset: int
    """The graph's ONNX opset (standard domain)."""
    ir_version: int
    """The graph's ONNX IR version."""
    parity: ParityFigures
    """The parity gate's figures for this graph."""
    variants: tuple[VariantEntry, ...] = ()
    """Reduced-precision copies (optional; never used unless asked for)."""

    def graph(self, precision: str = "fp32") -> tuple[str, str]:
        """(file, sha256) of the graph of ``precision``."""
        if precision == "fp32":
            return self.file, self.sha256
        for v in self.variants:
            if v.precision == precision:
                return v.file, v.sha256
        have = ["fp32", *(v.precision for v in self.variants)]
        raise ArtifactMissingError(
            f"agent {self.agent_id!r} has no {precision} graph in this artifact; it has {have}. "
            "Re-export with --quantize to add one, or use fp32."
        )


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: what was exported, from which run, and how to check it."""

    format_version: int
    """Manifest format; a runtime refuses formats newer than `MANIFEST_FORMAT_VERSION`."""
    package_version: str
    """qmix-edge version that wrote the artifact."""
    env_id: str
    """The environment the policy was trained on, as the user wrote it."""
    env_kwargs: Mapping[str, Any]
    """Keyword arguments the environment was made with."""
    env_options: Mapping[str, Any]
    """The other ``make_env`` arguments of the run (n_agents, team_reward, episode_limit), so a
    coordinator can rebuild the same environment."""
    agent_ids: tuple[str, ...]
    """All agents, in the environment's ``possible_agents`` order."""
    agents: tuple[AgentEntry, ...]
    """One entry per agent, in ``agent_ids`` order."""
    run_id: str
    """The training run the weights came from."""
    step: int
    """Env steps trained when the checkpoint was written."""
    network: Mapping[str, Any] = field(default_factory=dict)
    """How the agent network was built (kind, hidden_dim, share_params, ...): for humans."""

    # ------------------------------------------------------------------------ lookup
    def agent(self, agent_id: str) -> AgentEntry:
        """The entry of ``agent_id``; `UnknownAgentError` when the artifact has no such agent."""
        for a in self.agents:
            if a.agent_id == agent_id:
                return a
        raise UnknownAgentError(
            f"agent {agent_id!r} is not in this artifact (run {self.run_id}); "
            f"its agents are {list(self.agent_ids)}"
        )

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["env_kwargs"] = dict(self.env_kwargs)
        d["env_options"] = dict(self.env_options)
        d["network"] = dict(self.network)
        return d

    def to_json_bytes(self) -> bytes:
        """The canonical bytes written to ``manifest.json`` (sorted keys, 2-space indent)."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    def mirror_dict(self) -> dict[str, Any]:
        """The manifest as mirrored into each graph: every ``sha256`` and ``size_bytes`` removed."""
        d: dict[str, Any] = json.loads(self.to_json_bytes())  # plain JSON types throughout
        # Only the per-file entries lose these fields: a user's env_kwargs may use the same names.
        for agent in d["agents"]:
            for key in _FILE_DEPENDENT_KEYS:
                agent.pop(key, None)
            for variant in agent.get("variants", []):
                for key in _FILE_DEPENDENT_KEYS:
                    variant.pop(key, None)
        return d

    def mirror_json(self) -> str:
        return json.dumps(self.mirror_dict(), sort_keys=True, separators=(",", ":"))

    def check_mirror(self, metadata: Mapping[str, str], agent_id: str, precision: str) -> None:
        """Raise `ArtifactIntegrityError` unless a graph's metadata matches this manifest.

        The message names the fields that differ: the same run and step means ``manifest.json``
        was edited after export; another run or step means the files come from two exports."""
        where = f"the {precision} graph of agent {agent_id!r}"
        if metadata.get(METADATA_AGENT_KEY) != agent_id:
            raise ArtifactIntegrityError(
                f"{where} says it belongs to agent {metadata.get(METADATA_AGENT_KEY)!r}; "
                "the artifact's files were mixed up. Re-copy the artifact directory."
            )
        if metadata.get(METADATA_PRECISION_KEY) != precision:
            raise ArtifactIntegrityError(
                f"{where} says its precision is {metadata.get(METADATA_PRECISION_KEY)!r}"
            )
        raw = metadata.get(METADATA_MANIFEST_KEY)
        try:
            mirrored = json.loads(raw) if raw is not None else None
        except ValueError as e:
            raise ArtifactIntegrityError(f"{where} has an unreadable manifest mirror") from e
        mine = self.mirror_dict()
        if mirrored == mine:
            return
        if not isinstance(mirrored, dict):
            raise ArtifactIntegrityError(f"{where} carries no manifest mirror; re-export")
        diffs = _differences(mine, mirrored)
        shown = "; ".join(f"{k}: {MANIFEST_FILE} {a}, graph {b}" for k, a, b in diffs[:6])
        if (mirrored.get("run_id"), mirrored.get("step")) != (self.run_id, self.step):
            raise ArtifactIntegrityError(
                f"{where} comes from another export than {MANIFEST_FILE} ({shown}). Re-copy the "
                "whole artifact directory from one export."
            )
        fallback = [
            f"--fallback-action {k.split('[', 1)[1].split(']', 1)[0]}={a}"
            for k, a, _ in diffs
            if k.startswith("agents[") and k.endswith("].fallback_action")
        ]
        raise ArtifactIntegrityError(
            f"{MANIFEST_FILE} disagrees with {where} although both come from the same export "
            f"(run {self.run_id}, step {self.step}): {shown}. {MANIFEST_FILE} was edited after "
            "export, and each graph carries the manifest it was exported with. Restore "
            f"{MANIFEST_FILE} (re-copy the artifact directory)"
            + (
                f", or re-export with qmix-export RUN --out DIR {' '.join(fallback)} to change "
                "the fallback action."
                if fallback
                else ", or re-export the run."
            )
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """Parse a manifest dict; `ArtifactFormatError` for newer formats, corrupt otherwise."""
        try:
            version = int(d["format_version"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactCorruptError(
                f"{MANIFEST_FILE} has no valid format_version; found {d.get('format_version')!r}"
            ) from e
        if version > MANIFEST_FORMAT_VERSION:
            raise ArtifactFormatError(
                f"{MANIFEST_FILE} has format version {version}, newer than this runtime reads "
                f"(up to {MANIFEST_FORMAT_VERSION}); upgrade qmix-edge on the device or export "
                "with the version the device runs"
            )
        try:
            agents = tuple(
                AgentEntry(
                    **{k: v for k, v in a.items() if k not in ("parity", "variants")},
                    parity=ParityFigures(
                        **{**a["parity"], "sources": tuple(a["parity"]["sources"])}
                    ),
                    variants=tuple(VariantEntry(**v) for v in a.get("variants", ())),
                )
                for a in d["agents"]
            )
            m = cls(
                format_version=version,
                package_version=str(d["package_version"]),
                env_id=str(d["env_id"]),
                env_kwargs=dict(d["env_kwargs"]),
                env_options=dict(d.get("env_options", {})),
                agent_ids=tuple(str(a) for a in d["agent_ids"]),
                agents=agents,
                run_id=str(d["run_id"]),
                step=int(d["step"]),
                network=dict(d.get("network", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactCorruptError(
                f"{MANIFEST_FILE} does not describe an artifact ({type(e).__name__}: {e}); "
                "re-export or re-copy the artifact"
            ) from e
        if len(set(m.agent_ids)) != len(m.agent_ids):
            raise ArtifactCorruptError(
                f"{MANIFEST_FILE} lists an agent id more than once: {list(m.agent_ids)}"
            )
        if m.agent_ids != tuple(a.agent_id for a in m.agents):
            raise ArtifactCorruptError(
                f"{MANIFEST_FILE} lists agent_ids {list(m.agent_ids)} but entries for "
                f"{[a.agent_id for a in m.agents]}"
            )
        return m

    @classmethod
    def load(
        cls,
        artifact_dir: str | os.PathLike[str],
        *,
        public_key: PublicKeyLike | None = None,
        verify_files: bool = True,
    ) -> Manifest:
        """Read ``manifest.json`` from ``artifact_dir`` and check it.

        The signature (when ``public_key`` is given) is verified over the raw bytes before they are
        parsed; then the format version; then, with ``verify_files``, the sha256 of every listed
        file. Raises an `ArtifactError` subclass naming the problem.
        """
        root = Path(artifact_dir)
        raw = read_manifest_bytes(root)
        if public_key is not None:
            verify_signature(root, raw, public_key)
        try:
            parsed = json.loads(raw)
        except ValueError as e:
            raise ArtifactCorruptError(
                f"{root / MANIFEST_FILE} is not valid JSON ({e}); re-copy the artifact"
            ) from e
        if not isinstance(parsed, dict):
            raise ArtifactCorruptError(f"{root / MANIFEST_FILE} is not a JSON object")
        manifest = cls.from_dict(parsed)
        if verify_files:
            for a in manifest.agents:
                read_verified(root, a.file, a.sha256)
                for v in a.variants:
                    read_verified(root, v.file, v.sha256)
        return manifest


_FILE_DEPENDENT_KEYS: Final = frozenset({"sha256", "size_bytes"})
"""Manifest fields that depend on the graph files' final bytes, so cannot be mirrored into them."""


# ------------------------------------------------------------------------------- integrity
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest_bytes(root: Path) -> bytes:
    if not root.is_dir():
        raise ArtifactMissingError(
            f"artifact directory {root} does not exist or is not a directory; "
            "pass the directory qmix-export wrote"
        )
    path = root / MANIFEST_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise ArtifactMissingError(
            f"{path} is missing: {root} is not a complete qmix-export artifact (an export that "
            "failed its parity gate leaves none); re-run qmix-export"
        ) from e


def read_verified(root: Path, file: str, expected_sha256: str) -> bytes:
    """Read ``root/file`` and return its bytes only if their sha256 matches the manifest."""
    if Path(file).name != file:
        raise ArtifactCorruptError(f"manifest file entry {file!r} is not a plain file name")
    path = root / file
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ArtifactMissingError(
            f"{path} is listed in {MANIFEST_FILE} but missing; re-copy the artifact directory"
        ) from e
    found = sha256_bytes(data)
    if found != expected_sha256:
        raise ArtifactIntegrityError(
            f"{path} has sha256 {found}, but {MANIFEST_FILE} expects {expected_sha256}: the graph "
            "was modified or truncated after export. Do not run it; re-copy the artifact."
        )
    return data


PublicKeyLike: TypeAlias = "Ed25519PublicKey | bytes | str | os.PathLike[str]"
"""An Ed25519 public key: the key object, its PEM or raw 32 bytes, or the path of a PEM file."""


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    """Turn ``key`` into an `Ed25519PublicKey`; `SignatureError` when it is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, bytes):
        data = key
    else:
        try:
            data = Path(key).read_bytes()
        except OSError as e:
            raise SignatureError(f"cannot read the public key file {key}: {e}") from e
    try:
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        loaded = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise SignatureError(
            f"not an Ed25519 public key (expected PEM SubjectPublicKeyInfo or 32 raw bytes): {e}"
        ) from e
    if not isinstance(loaded, Ed25519PublicKey):
        raise SignatureError(f"expected an Ed25519 public key; found {type(loaded).__name__}")
    return loaded


def verify_signature(root: Path, manifest_bytes: bytes, public_key: PublicKeyLike) -> None:
    """Verify ``manifest.sig`` over ``manifest_bytes``; `SignatureError` unless it is valid."""
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key)
    sig_path = root / SIGNATURE_FILE
    try:
        signature = sig_path.read_bytes()
    except FileNotFoundError as e:
        raise SignatureError(
            f"a public key was given but {sig_path} is missing: the artifact is unsigned. "
            "Export with --sign KEY, or load without a public key if unsigned artifacts are allowed."
        ) from e
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature as e:
        raise SignatureError(
            f"the signature {sig_path} does not verify for {root / MANIFEST_FILE} with the given "
            "public key: the manifest was modified or signed with another key. Do not run it."
        ) from e


def _differences(mine: Any, theirs: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, this value, that value) of every leaf where two JSON values differ; agents
    are named by their id (``agents[speaker_0].fallback_action``)."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(mine) | set(theirs)):
            sub = f"{path}.{k}" if path else str(k)
            out += _differences(mine.get(k), theirs.get(k), sub)
        return out
    if isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs):
        out = []
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            name = a.get("agent_id", i) if isinstance(a, dict) else i
            out += _differences(a, b, f"{path}[{name}]")
        return out
    return [] if mine == theirs else [(path, mine, theirs)]
