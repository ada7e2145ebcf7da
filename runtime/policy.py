"""One agent's greedy policy on its device: verified load of its ONNX graph, then lean `act()` calls.

`AgentPolicy.load(artifact_dir, agent_id)`:
1. reads ``manifest.json``, verifies its Ed25519 signature when a public key is given, checks the
   format version and finds the agent (`qmix_edge.runtime.artifact`);
2. reads the agent's graph bytes once and checks their sha256 against the manifest;
3. only then creates the onnxruntime session, from those same verified bytes (so the file cannot be
   swapped between the check and the load): CPU, 1 intra-op and 1 inter-op thread, spinning off,
   sequential execution;
4. checks the graph's inputs, outputs and mirrored manifest against the manifest, and warms up.
Any failure raises an `ArtifactError` and leaves nothing half-loaded.

`act(obs, mask)` validates the observation (shape, dtype, finite) and the mask (shape, dtype, at least
one allowed action) with clear `PolicyInputError`s, copies them into preallocated input arrays, runs
the graph with a reused feed dict, and carries the recurrent state (the previous call's ``h_out``
array is fed straight back) and previous action to the next call; a refused call changes no state; `reset()` clears
both at episode start or rejoin.

No torch and no ``onnx`` package here: numpy and onnxruntime only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import onnxruntime as ort

from .artifact import (
    METADATA_MANIFEST_KEY,
    PRECISIONS,
    AgentEntry,
    ArtifactCorruptError,
    ArtifactError,
    ArtifactIntegrityError,
    Manifest,
    PublicKeyLike,
    read_verified,
)
from .errors import RuntimeFailure
from .tensors import TensorNames

log = logging.getLogger(__name__)

_FLOAT_DTYPES: Final = frozenset({np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)})
_NO_ACTION: Final = -1


class PolicyError(RuntimeFailure):
    """Base class of errors raised by a loaded policy."""


class PolicyInputError(PolicyError, ValueError):
    """An ``act()`` input is unusable: wrong shape or dtype, non-finite values, or nothing allowed."""


class ActResult(NamedTuple):
    """The outcome of one `AgentPolicy.act` call."""

    action: int
    """The greedy action among the allowed ones (ties to the lowest index)."""
    q_values: np.ndarray
    """float32 (n_actions,): the agent's Q-values, masked-out actions included unchanged (a copy)."""


def session_options() -> ort.SessionOptions:
    """The device settings: 1 intra-op and 1 inter-op thread, no spinning, sequential execution."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


class AgentPolicy:
    """One agent's decentralised greedy policy. Build with `AgentPolicy.load`.

    Holds one episode's state (hidden state, previous action), so one instance serves one agent in
    one thread; it is not safe to call `act` from several threads at once.
    """

    def __init__(
        self,
        manifest: Manifest,
        entry: AgentEntry,
        session: ort.InferenceSession,
        artifact_sha256: str,
        precision: str,
    ) -> None:
        self.manifest = manifest
        """The artifact's manifest (signature and hashes already verified)."""
        self.entry = entry
        self.precision = precision
        """Which graph runs: ``fp32`` (the default, parity-checked) or a reduced-precision variant."""
        self.artifact_sha256 = artifact_sha256
        """sha256 of the graph file this policy runs (what the agent reports when it joins)."""
        self._session = session
        # The graph's inputs live in these fixed buffers, written in place on every call (never
        # rebound: the I/O binding below points at their memory).
        self._obs = np.zeros((1, entry.obs_dim), dtype=np.float32)  # (1, obs_dim)
        self._zeros = np.zeros(entry.obs_dim, dtype=np.float32)  # the finiteness screen
        self._mask = np.ones((1, entry.n_actions), dtype=bool)  # (1, n_actions)
        self._prev = np.full((1,), _NO_ACTION, dtype=np.int64)  # (1,)
        self._h = np.zeros((1, entry.hidden_dim), dtype=np.float32)  # (1, hidden): h_in
        self._recurrent = entry.recurrent
        self._feed: dict[str, np.ndarray] = {
            TensorNames.OBS: self._obs,
            TensorNames.ACTION_MASK: self._mask,
        }
        if entry.uses_prev_action:
            self._feed[TensorNames.PREV_ACTION] = self._prev
        if entry.recurrent:
            self._feed[TensorNames.H_IN] = self._h
        self._outputs = [TensorNames.Q_VALUES, TensorNames.ACTION]
        if entry.recurrent:
            self._outputs.append(TensorNames.H_OUT)
        # Output buffers for the I/O-bound call path (see `_warm_up`), in `_outputs` order.
        self._out_buffers: list[np.ndarray] = [
            np.zeros((1, entry.n_actions), dtype=np.float32),  # q_values
            np.zeros((1,), dtype=np.int64),  # action
        ]
        if entry.recurrent:
            self._out_buffers.append(np.zeros((1, entry.hidden_dim), dtype=np.float32))  # h_out
        self._infer: Any = self._infer_run  # () -> [q_values, action, (h_out)]
        self._obs_shape = (entry.obs_dim,)
        self._mask_shape = (entry.n_actions,)
        self._obs_row = self._obs[0]  # views of the input buffers' one row, made once
        self._mask_row = self._mask[0]

    # ------------------------------------------------------------------------------ load
    @classmethod
    def load(
        cls,
        artifact_dir: str | os.PathLike[str],
        agent_id: str,
        *,
        public_key: PublicKeyLike | None = None,
        precision: str = "fp32",
    ) -> AgentPolicy:
        """Load ``agent_id``'s policy from ``artifact_dir``; every check runs before the session.

        ``public_key``: when given, ``manifest.sig`` must verify with it. ``precision``: ``fp32``
        (default) or a reduced-precision variant the artifact holds (``int8``, ``fp16``).
        Raises an `ArtifactError` subclass on any problem.
        """
        if precision not in PRECISIONS:
            raise ArtifactError(f"precision must be one of {list(PRECISIONS)}; found {precision!r}")
        root = os.fspath(artifact_dir)
        manifest = Manifest.load(root, public_key=public_key, verify_files=False)
        entry = manifest.agent(agent_id)
        file, sha = entry.graph(precision)
        data = read_verified(Path(root), file, sha)  # hash checked: only now may a session exist
        try:
            session = ort.InferenceSession(
                data, sess_options=session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ArtifactCorruptError(
                f"onnxruntime cannot load {file} although its sha256 matches the manifest ({e}); "
                "the artifact was exported for a different onnxruntime. Re-export with this "
                f"version ({ort.__version__}) installed."
            ) from e
        _check_session(session, manifest, entry, precision)
        policy = cls(manifest, entry, session, sha, precision)
        policy._warm_up()
        log.info(
            "loaded agent %s (%s, %s) from %s, run %s step %d",
            agent_id,
            precision,
            sha[:12],
            root,
            manifest.run_id,
            manifest.step,
        )
        return policy

    def _warm_up(self, n: int = 3) -> None:
        """Run the graph a few times, and pick the call path `act` uses.

        The fastest path binds the fixed input and output buffers to the session once (onnxruntime
        I/O binding: no feed dict to validate, no output arrays to allocate; 13-15 us against
        21-23 us per GRU call measured here). It is used only when it exists in this onnxruntime
        build and gives results identical to the public ``run`` on the warm-up inputs; otherwise
        `act` calls the public ``run``.
        """
        expected = self._session.run(self._outputs, self._feed)
        for _ in range(n):
            self._session.run(self._outputs, self._feed)
        try:
            bound = self._bind()
            got = [b.copy() for b in bound()]
        except Exception:  # a different onnxruntime build: keep the public path
            got = None
        if got is not None and all(
            np.array_equal(a, b) for a, b in zip(got, expected, strict=True)
        ):
            self._infer = bound
        self.reset()

    @property
    def uses_io_binding(self) -> bool:
        """Whether `act` runs through onnxruntime's I/O binding on fixed buffers (the fast path;
        False: a plain session ``run`` per call, where the installed onnxruntime lacks it)."""
        return self._infer != self._infer_run

    def _infer_run(self) -> list[np.ndarray]:
        return self._session.run(self._outputs, self._feed)  # type: ignore[no-any-return]

    def _bind(self) -> Any:
        """The I/O-bound call: runs the graph on the input buffers into `_out_buffers`."""
        binding = self._session.io_binding()
        for name, arr in self._feed.items():
            binding.bind_input(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
        for name, arr in zip(self._outputs, self._out_buffers, strict=True):
            binding.bind_output(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
        run = self._session._sess.run_with_iobinding  # type: ignore[attr-defined]
        inner = binding._iobinding
        outs = self._out_buffers

        def infer() -> list[np.ndarray]:
            run(inner, None)
            return outs

        self._binding = binding  # keeps the binding (and so its pointers' users) alive
        return infer

    # ------------------------------------------------------------------------ properties
    @property
    def agent_id(self) -> str:
        return self.entry.agent_id

    @property
    def obs_dim(self) -> int:
        return self.entry.obs_dim

    @property
    def n_actions(self) -> int:
        return self.entry.n_actions

    @property
    def fallback_action(self) -> int:
        """The manifest's fallback action: what to apply when no decision arrives in time."""
        return self.entry.fallback_action

    @property
    def recurrent(self) -> bool:
        return self.entry.recurrent

    @property
    def prev_action(self) -> int:
        """The previous action this policy will feed back (-1 right after `reset`)."""
        return int(self._prev[0])

    # ----------------------------------------------------------------------------- act
    def reset(self) -> None:
        """Start of an episode (or a rejoin): zero the hidden state, forget the previous action."""
        self._h.fill(0.0)
        self._prev[0] = _NO_ACTION

    def act(
        self, obs: np.ndarray, mask: np.ndarray | None = None, *, known_finite: bool = False
    ) -> ActResult:
        """The greedy action for ``obs`` (obs_dim,) among ``mask`` (n_actions,) bool (None = all).

        Advances the recurrent state and remembers the action as the next ``prev_action``.
        ``known_finite``: the caller has already refused NaN and inf in ``obs`` (qmix-agent's wire
        codec and sensor check do), so the finiteness screen is skipped; every other check runs.
        """
        if not isinstance(obs, np.ndarray):
            raise PolicyInputError(
                f"expected obs as a numpy array of shape {self._obs_shape}; found "
                f"{type(obs).__name__}. Wrap it with np.asarray(obs, dtype=np.float32)."
            )
        if obs.shape != self._obs_shape:
            raise PolicyInputError(
                f"agent {self.agent_id!r} expects obs of shape {self._obs_shape} (its own "
                f"observation, unpadded); found shape {obs.shape}"
            )
        if obs.dtype not in _FLOAT_DTYPES:
            raise PolicyInputError(
                f"expected a float32 observation (float64 and float16 are converted); found "
                f"dtype {obs.dtype}. Convert with obs.astype(np.float32)."
            )
        row = self._obs_row
        np.copyto(row, obs, casting="unsafe")
        # Finiteness screen in one BLAS call: finite @ zeros == 0, while NaN or inf anywhere gives
        # NaN (and never overflows). numpy warns "invalid value" for inf, which is then refused.
        if not known_finite and row.dot(self._zeros) != 0.0:
            bad = np.flatnonzero(~np.isfinite(row)).tolist()
            raise PolicyInputError(
                f"the observation of agent {self.agent_id!r} has NaN or inf at indices {bad[:10]}; "
                "the sensor or the sender is faulty. The policy state is unchanged."
            )
        if mask is None:
            self._mask.fill(True)
        else:
            if not isinstance(mask, np.ndarray) or mask.shape != self._mask_shape:
                found = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
                raise PolicyInputError(
                    f"agent {self.agent_id!r} expects a bool action mask of shape "
                    f"{self._mask_shape}; found {found}"
                )
            if mask.dtype != np.bool_:
                raise PolicyInputError(
                    f"expected a bool action mask (True = allowed); found dtype {mask.dtype}. "
                    "Convert with mask.astype(bool)."
                )
            np.copyto(self._mask_row, mask)
        outs = self._infer()
        action = int(outs[1][0])
        if mask is not None and not mask[action]:
            # The graph's argmax lands on a masked-out action only when every action is masked
            # (or when the Q-values are not finite, e.g. for absurdly large observations).
            if not mask.any():
                raise PolicyInputError(
                    f"the action mask of agent {self.agent_id!r} allows no action (all "
                    f"{self.n_actions} are False); at least one must be allowed. Use the "
                    f"fallback action ({self.fallback_action}) or skip this agent's step."
                )
            raise PolicyInputError(
                f"the Q-values of agent {self.agent_id!r} are not finite for this observation "
                f"(max |obs| = {float(np.abs(row).max()):.3g}); the observation is far outside "
                "anything seen in training. The policy state is unchanged."
            )
        if self._recurrent:
            np.copyto(self._h, outs[2])  # (1, hidden): the next call's state
        self._prev[0] = action
        return ActResult(action, outs[0][0].copy())

    def record_action(self, action: int) -> None:
        """Tell the policy which action was actually applied when it differs from `act`'s choice.

        E.g. the fallback action after a missed deadline: with last-action input, the next step
        must see the action the environment really received.
        """
        if not 0 <= int(action) < self.n_actions:
            raise PolicyInputError(
                f"action {action} is out of range for agent {self.agent_id!r} "
                f"(0..{self.n_actions - 1})"
            )
        self._prev[0] = int(action)

    def __repr__(self) -> str:
        e = self.entry
        return (
            f"AgentPolicy(agent_id={e.agent_id!r}, obs_dim={e.obs_dim}, n_actions={e.n_actions}, "
            f"recurrent={e.recurrent}, precision={self.precision!r}, run={self.manifest.run_id!r})"
        )


def _check_session(
    session: ort.InferenceSession, manifest: Manifest, entry: AgentEntry, precision: str
) -> None:
    """The graph must carry the manifest's mirror and take and return exactly what it says.

    The mirror first: when ``manifest.json`` was edited, its message names the edited field."""
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_MANIFEST_KEY not in meta:
        raise ArtifactIntegrityError(
            f"the graph of agent {entry.agent_id!r} carries no {METADATA_MANIFEST_KEY!r} "
            "metadata: it was not written by qmix-export. Re-export."
        )
    manifest.check_mirror(meta, entry.agent_id, precision)
    want_in: dict[str, tuple[str, Any]] = {
        TensorNames.OBS: ("tensor(float)", entry.obs_dim),
        TensorNames.ACTION_MASK: ("tensor(bool)", entry.n_actions),
    }
    if entry.uses_prev_action:
        want_in[TensorNames.PREV_ACTION] = ("tensor(int64)", None)
    if entry.recurrent:
        want_in[TensorNames.H_IN] = ("tensor(float)", entry.hidden_dim)
    want_out: dict[str, tuple[str, Any]] = {
        TensorNames.Q_VALUES: ("tensor(float)", entry.n_actions),
        TensorNames.ACTION: ("tensor(int64)", None),
    }
    if entry.recurrent:
        want_out[TensorNames.H_OUT] = ("tensor(float)", entry.hidden_dim)
    for kind, want, have in (
        ("inputs", want_in, session.get_inputs()),
        ("outputs", want_out, session.get_outputs()),
    ):
        found = {a.name: (a.type, a.shape[1] if len(a.shape) > 1 else None) for a in have}
        if found != want:
            raise ArtifactIntegrityError(
                f"the graph of agent {entry.agent_id!r} has {kind} {found}, but the manifest implies "
                f"{want}; the graph and manifest do not belong together. Re-export."
            )
