"""Write an artifact: per-agent ONNX graphs, the manifest, optional variants and signature.

`export_agent_networks` is the core: from a trained `AgentNetwork` and its `EnvSpec` it

1. builds one `AgentGraph` per agent and exports it (`qmix_edge.export.graph`);
2. records team trajectories (real env rollouts when an env is given, plus synthetic ones) and runs
   the parity gate on every graph (`qmix_edge.export.parity`);
3. builds the optional reduced-precision variants and measures their action agreement with fp32;
4. writes everything into a fresh temporary directory next to ``out_dir``: graphs carrying the
   manifest mirror in ``metadata_props``, ``manifest.json`` and ``manifest.sig``; proves the final
   bytes compute exactly what was gated and that the runtime loads every agent from them;
5. only then renames the directory into place.

Any failure raises an `ExportError` and removes the temporary directory, so a failed export leaves
no artifact that looks good (an existing artifact at ``out_dir`` is only replaced by a complete one).
`export_run` is `qmix_edge.train.checkpoint.load_run` followed by the core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

import qmix_edge
from qmix_edge.common import atomic
from qmix_edge.envs import EnvSpec, TeamEnv
from qmix_edge.runtime.artifact import (
    METADATA_AGENT_KEY,
    METADATA_MANIFEST_KEY,
    METADATA_PRECISION_KEY,
    SIGNATURE_FILE,
    AgentEntry,
    Manifest,
    ParityFigures,
    VariantEntry,
    sha256_bytes,
)
from qmix_edge.runtime.tensors import MANIFEST_FILE, MANIFEST_FORMAT_VERSION
from qmix_edge.train.networks import AgentNetwork

from . import parity
from .errors import ExportConfigError, ExportError
from .graph import OPSET, AgentGraph, export_graph
from .signing import load_private_key, sign
from .variants import VARIANT_PRECISIONS, make_variant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _AgentWork:
    """One agent's in-memory export before anything is written."""

    graph: AgentGraph
    model: onnx.ModelProto
    figures: ParityFigures
    replay: parity.AgentReplay
    variants: dict[str, tuple[onnx.ModelProto, float, float]]
    """precision -> (model, action agreement, max |Q - Q_fp32|)."""


def resolve_fallback_actions(
    spec: EnvSpec, fallback: int | Mapping[str, int] | None
) -> dict[str, int]:
    """Per-agent fallback actions: one int for all, a per-agent mapping (others 0), or all 0.

    Action 0 is the default because it is the no-op in the PettingZoo MPE and Butterfly
    conventions; configure another where an environment's safe action differs.
    """
    out = {a.agent_id: 0 for a in spec.agents}
    if fallback is None:
        return out
    if isinstance(fallback, int):
        out = {a.agent_id: fallback for a in spec.agents}
    else:
        unknown = sorted(set(fallback) - set(out))
        if unknown:
            raise ExportConfigError(
                f"fallback action given for unknown agents {unknown}; agents are {list(out)}"
            )
        out.update({k: int(v) for k, v in fallback.items()})
    for a in spec.agents:
        if not 0 <= out[a.agent_id] < a.n_actions:
            raise ExportConfigError(
                f"fallback action {out[a.agent_id]} for agent {a.agent_id!r} is out of range "
                f"0..{a.n_actions - 1}"
            )
    return out


def check_finite_weights(
    agent_net: AgentNetwork, holder: str, where: str = "", hint: Callable[[], str] | None = None
) -> None:
    """Raise `ExportError` naming the layers of ``agent_net`` that hold NaN or inf.

    Checked before any parity recording: such a network outputs NaN Q-values, and the parity gate
    would only report that as a mismatch of NaNs.
    """
    from qmix_edge.train.finite import describe_non_finite, non_finite_tensors

    weights = agent_net.state_dict()
    bad = non_finite_tensors(weights)
    if not bad:
        return
    layers = "; ".join(f"layer {name}: {describe_non_finite(weights[name])}" for name in bad[:4])
    more = f"; and {len(bad) - 4} more layers" if len(bad) > 4 else ""
    raise ExportError(
        f"{holder} holds non-finite weights (agent network, {layers}{more}){where}; a policy with "
        f"NaN or inf weights cannot be exported. {hint() if hint is not None else ''}".rstrip()
    )


def _finite_checkpoint_hint(run_dir: Path, loaded: Path) -> str:
    """Name the newest other checkpoint of the run whose agent network is finite, if any."""
    from qmix_edge.train.checkpoint import CheckpointError, list_checkpoints, read_model
    from qmix_edge.train.finite import non_finite_tensors

    for folder in reversed(list_checkpoints(run_dir)):
        if folder == loaded:
            continue
        try:
            weights = read_model(folder)["learner"]["agent_net"]
        except (CheckpointError, KeyError, TypeError):
            continue
        if not non_finite_tensors(weights):
            return f"Export the newest finite checkpoint instead: --checkpoint {folder.name}"
    return (
        "No checkpoint of this run has finite weights: train it again (qmix-train stops a run "
        "with a named cause before it writes such weights)"
    )


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportConfigError(f"--out {out_dir} exists and is not a directory")
    contents = list(out_dir.iterdir())
    if not contents:
        return
    if (out_dir / MANIFEST_FILE).exists():
        if overwrite:
            return
        raise ExportConfigError(
            f"{out_dir} already holds an artifact; pass --force (overwrite=True) to replace it"
        )
    raise ExportConfigError(
        f"{out_dir} is a non-empty directory that is not an artifact; choose an empty or new path"
    )


def _set_metadata(model: onnx.ModelProto, mirror: str, agent_id: str, precision: str) -> None:
    del model.metadata_props[:]
    for key, value in (
        (METADATA_MANIFEST_KEY, mirror),
        (METADATA_AGENT_KEY, agent_id),
        (METADATA_PRECISION_KEY, precision),
    ):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _file_name(agent_id: str, precision: str) -> str:
    if Path(agent_id).name != agent_id or agent_id.startswith("."):
        raise ExportConfigError(f"agent id {agent_id!r} cannot be used as a file name")
    return f"{agent_id}.onnx" if precision == "fp32" else f"{agent_id}.{precision}.onnx"


def export_agent_networks(
    agent_net: AgentNetwork,
    spec: EnvSpec,
    out_dir: str | os.PathLike[str],
    *,
    run_id: str = "untracked",
    step: int = 0,
    env: TeamEnv | None = None,
    env_options: Mapping[str, Any] | None = None,
    fallback_actions: int | Mapping[str, int] | None = None,
    quantize: Iterable[str] = (),
    sign_key: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    seed: int = 0,
    synthetic_episodes: int = 6,
    env_episodes: int = 4,
    progress: bool = False,
) -> Manifest:
    """Export ``agent_net`` (trained on ``spec``) as an artifact in ``out_dir``; return its manifest.

    ``agent_net`` is put in eval mode (its weights are only read).

    ``env`` (optional) supplies real observations for the parity recording; synthetic trajectories
    are always added. ``env_options`` (n_agents, team_reward, episode_limit) are recorded so the
    coordinator can rebuild the same environment. ``progress`` shows a progress bar over the agents
    (for interactive use). Raises `ExportConfigError` for bad options and
    `ExportError` (`ParityError`) when the export fails; nothing is left at ``out_dir`` then.
    """
    out = Path(out_dir)
    precisions = list(dict.fromkeys(quantize))
    bad = [p for p in precisions if p not in VARIANT_PRECISIONS]
    if bad:
        raise ExportConfigError(
            f"unknown --quantize precision {bad}; choose from {list(VARIANT_PRECISIONS)}"
        )
    fallback = resolve_fallback_actions(spec, fallback_actions)
    key = load_private_key(sign_key) if sign_key is not None else None
    check_finite_weights(agent_net, "the network to export")
    _prepare_out_dir(out, overwrite)
    for a in spec.agents:
        _file_name(a.agent_id, "fp32")
    agent_net.eval()

    recordings = [
        parity.record_synthetic(agent_net, spec, n_episodes=synthetic_episodes, seed=seed)
    ]
    if env is not None:
        if env.spec.agent_ids != spec.agent_ids or env.spec.max_obs_dim != spec.max_obs_dim:
            raise ExportConfigError(
                f"the environment's agents {list(env.spec.agent_ids)} do not match the trained "
                f"spec {list(spec.agent_ids)}"
            )
        recordings.insert(
            0, parity.record_env(agent_net, env, n_episodes=env_episodes, seed=seed + 1)
        )
    rec = parity.Recording.concat(recordings)
    log.info(
        "parity recording: %d steps, %d episodes, %s", rec.n_steps, rec.n_episodes, rec.sources
    )

    work: list[_AgentWork] = []
    bar = tqdm(
        total=spec.n_agents, desc="export + parity", unit="agent", disable=not progress, leave=False
    )
    for index, agent in enumerate(spec.agents):
        graph = AgentGraph(agent_net, spec, index)
        model = export_graph(graph)
        figures, replay = parity.check_parity(
            model.SerializeToString(), rec, index, spec, agent_net
        )
        log.info(
            "agent %s: parity ok on %d steps, max |dQ| %.2e, %d near-ties",
            agent.agent_id,
            figures.n_steps,
            figures.max_abs_q_diff,
            figures.near_ties,
        )
        variants: dict[str, tuple[onnx.ModelProto, float, float]] = {}
        for precision in precisions:
            vmodel = make_variant(model, precision)
            vreplay = parity.replay_agent(
                parity.make_session(vmodel.SerializeToString()),
                rec,
                index,
                agent.obs_dim,
                agent.n_actions,
                graph.recurrent,
                graph.uses_prev_action,
                graph.hidden_dim,
            )
            agreement = float(np.mean(vreplay.action == replay.action))
            qdiff = float(np.abs(vreplay.q - replay.q).max())
            log.info(
                "agent %s %s: action agreement %.4f, max |dQ| vs fp32 %.3g",
                agent.agent_id,
                precision,
                agreement,
                qdiff,
            )
            variants[precision] = (vmodel, agreement, qdiff)
        work.append(_AgentWork(graph, model, figures, replay, variants))
        bar.update(1)
    bar.close()

    # The mirror holds no sha256 (a file cannot contain its own hash), so it is fixed before the
    # hashes are known: build the manifest with empty hashes, embed its mirror, then hash.
    entries: list[AgentEntry] = []
    for w in work:
        g = w.graph
        entries.append(
            AgentEntry(
                agent_id=g.agent_id,
                file=_file_name(g.agent_id, "fp32"),
                sha256="",
                size_bytes=0,
                obs_dim=g.obs_dim,
                n_actions=g.n_actions,
                recurrent=g.recurrent,
                hidden_dim=g.hidden_dim,
                uses_prev_action=g.uses_prev_action,
                fallback_action=fallback[g.agent_id],
                opset=OPSET,
                ir_version=int(w.model.ir_version),
                parity=w.figures,
                variants=tuple(
                    VariantEntry(
                        precision=p,
                        file=_file_name(g.agent_id, p),
                        sha256="",
                        size_bytes=0,
                        action_agreement=agreement,
                        max_abs_q_diff=qdiff,
                        n_steps=rec.n_steps,
                    )
                    for p, (_, agreement, qdiff) in w.variants.items()
                ),
            )
        )
    draft = Manifest(
        format_version=MANIFEST_FORMAT_VERSION,
        package_version=qmix_edge.__version__,
        env_id=spec.env_id,
        env_kwargs=dict(spec.env_kwargs),
        env_options=dict(env_options or {}),
        agent_ids=spec.agent_ids,
        agents=tuple(entries),
        run_id=run_id,
        step=int(step),
        network={
            "kind": agent_net.kind,
            "hidden_dim": agent_net.hidden_dim,
            "share_params": agent_net.share_params,
            "use_prev_action": agent_net.use_prev_action,
            "use_agent_id": agent_net.use_agent_id,
            "train_obs_dim": agent_net.obs_dim,
            "train_n_actions": agent_net.n_actions,
        },
    )
    mirror = draft.mirror_json()

    files: dict[str, bytes] = {}
    final_entries: list[AgentEntry] = []
    for w, entry in zip(work, draft.agents, strict=True):
        _set_metadata(w.model, mirror, entry.agent_id, "fp32")
        data = w.model.SerializeToString()
        _check_unchanged(data, w, rec, spec)
        files[entry.file] = data
        variant_entries = []
        for v in entry.variants:
            vmodel = w.variants[v.precision][0]
            _set_metadata(vmodel, mirror, entry.agent_id, v.precision)
            vdata = vmodel.SerializeToString()
            files[v.file] = vdata
            variant_entries.append(replace(v, sha256=sha256_bytes(vdata), size_bytes=len(vdata)))
        final_entries.append(
            replace(
                entry,
                sha256=sha256_bytes(data),
                size_bytes=len(data),
                variants=tuple(variant_entries),
            )
        )
    manifest = replace(draft, agents=tuple(final_entries))
    manifest_bytes = manifest.to_json_bytes()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for name, data in files.items():
            atomic.write_bytes(tmp / name, data)
        atomic.write_bytes(tmp / MANIFEST_FILE, manifest_bytes)
        public_key = None
        if key is not None:
            atomic.write_bytes(tmp / SIGNATURE_FILE, sign(manifest_bytes, key))
            public_key = key.public_key()
        _self_check(tmp, manifest, public_key)
        os.chmod(tmp, 0o755)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote artifact %s (%d agents, run %s step %d)", out, len(entries), run_id, step)
    return manifest


def _check_unchanged(data: bytes, w: _AgentWork, rec: parity.Recording, spec: EnvSpec) -> None:
    """The final bytes (with metadata) must compute exactly what passed the gate."""
    index = spec.agent_ids.index(w.graph.agent_id)
    again = parity.replay_agent(
        parity.make_session(data),
        rec,
        index,
        w.graph.obs_dim,
        w.graph.n_actions,
        w.graph.recurrent,
        w.graph.uses_prev_action,
        w.graph.hidden_dim,
    )
    if not (np.array_equal(again.q, w.replay.q) and np.array_equal(again.action, w.replay.action)):
        raise ExportError(
            f"the final graph of agent {w.graph.agent_id!r} computes differently from the gated one; "
            "this is an exporter bug, please report it"
        )


def _self_check(root: Path, manifest: Manifest, public_key: Any) -> None:
    """Load every agent (and variant) through the device runtime before the artifact is published."""
    from qmix_edge.runtime.policy import AgentPolicy

    Manifest.load(root, public_key=public_key)
    for a in manifest.agents:
        for precision in ("fp32", *(v.precision for v in a.variants)):
            AgentPolicy.load(root, a.agent_id, public_key=public_key, precision=precision)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished directory to ``out``; an existing artifact is swapped out, then removed."""
    old: Path | None = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        else:
            out.rmdir()
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old, out)
        raise
    atomic.fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    use_env: bool = True,
    fallback_actions: int | Mapping[str, int] | None = None,
    quantize: Sequence[str] = (),
    sign_key: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> Manifest:
    """Export a training run to ``out_dir``: the checkpoint of its best greedy evaluation (or, for
    a run without one, its latest), or ``checkpoint`` (``"best"``, ``"last"``, a folder).

    With ``use_env`` the parity recording includes rollouts of the run's own environment (made
    with the run's config); when the environment cannot be made here, synthetic inputs are used
    alone and a warning says so.
    """
    from qmix_edge.train.checkpoint import load_run
    from qmix_edge.train.errors import CheckpointError, TrainError

    try:
        run = load_run(run_dir, checkpoint)
    except (CheckpointError, TrainError, FileNotFoundError) as e:
        raise ExportConfigError(f"cannot load run {run_dir}: {e}") from e
    loaded = run.checkpoint_path
    check_finite_weights(
        run.agent_net,
        "the checkpoint",
        where=f" in {loaded}",
        hint=lambda: _finite_checkpoint_hint(Path(run_dir), loaded),
    )
    config = run.config
    env_options = {
        "n_agents": run.spec.n_agents,  # the team the run had (older configs kept the request)
        "team_reward": config.get("team_reward"),
        "episode_limit": config.get("episode_limit"),
    }
    env = _make_env(run.spec, config) if use_env else None
    try:
        return export_agent_networks(
            run.agent_net,
            run.spec,
            out_dir,
            run_id=run.run_id,
            step=run.step,
            env=env,
            env_options=env_options,
            fallback_actions=fallback_actions,
            quantize=quantize,
            sign_key=sign_key,
            overwrite=overwrite,
            seed=seed,
            progress=progress,
        )
    finally:
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()


def _make_env(spec: EnvSpec, config: Mapping[str, Any]) -> TeamEnv | None:
    from qmix_edge.envs import EnvError, make_env

    try:
        env = make_env(
            str(config.get("env", spec.env_id)),
            n_agents=spec.n_agents,
            team_reward=config.get("team_reward", "sum"),
            episode_limit=config.get("episode_limit"),
            env_kwargs=config.get("env_kwargs") or {},
        )
    except (EnvError, ImportError) as e:
        log.warning(
            "cannot make the run's environment here (%s); the parity gate uses synthetic "
            "observations only",
            e,
        )
        return None
    if env.spec.agent_ids != spec.agent_ids:
        log.warning("the environment's agents differ from the run's; synthetic observations only")
        env.close()
        return None
    return env
