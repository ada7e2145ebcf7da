"""Overlapped collection: the collector process, its rounds, and what a run keeps (determinism,
the staleness bound, errors from the child)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import TWO_STEP_PAPER, tiny

from qmix_edge.envs import BatchedSimpleSpread
from qmix_edge.envs.subproc_vector import RemoteTraceback
from qmix_edge.train.collector import Collector, evaluate
from qmix_edge.train.collector_process import (
    CollectorProcess,
    CollectorProcessError,
    EpisodeQueue,
    weights_of,
)
from qmix_edge.train.config import TrainConfig
from qmix_edge.train.errors import ConfigError, NonFiniteInputError
from qmix_edge.train.registry import build_models
from qmix_edge.train.run_envs import make_eval_envs
from qmix_edge.train.trainer import Trainer

SPREAD = {"vector": "batched", "n_envs": 4, "env_steps_per_update": 20}


def _records(run_dir: Path, key: str) -> list[tuple[int, float]]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if key in rec:
            out.append((rec["step"], rec[key]))
    return out


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    return np.random.default_rng(seed), np.random.default_rng(seed + 1)


def test_the_child_acts_with_exactly_the_weights_it_is_sent() -> None:
    cfg = TrainConfig.from_dict(tiny(**SPREAD, epsilon_start=0.2, epsilon_end=0.2))
    local_env = BatchedSimpleSpread(cfg.n_envs)
    spec = local_env.spec
    torch.manual_seed(0)
    nets = [build_models(cfg, spec)[0] for _ in range(2)]  # two different sets of weights
    local_net = build_models(cfg, spec)[0]
    local = Collector(local_env, local_net, spec.episode_limit, *_rngs(7))
    remote = CollectorProcess(cfg, "batched", spec, *_rngs(7), eval_seeds=[1, 2])
    try:
        local.start()
        remote.start()
        env_steps = episodes = 0
        for net, n_steps in ((nets[0], 30), (nets[1], 30), (nets[0], 3)):
            remote.begin_round(weights_of(net), env_steps, n_steps)
            local_net.load_state_dict(net.state_dict())
            queue = EpisodeQueue()
            finished = []
            for i in range(n_steps):
                actions = local.act(cfg.epsilon(env_steps + i * cfg.n_envs))
                finished += local.record(local_env.step(actions), queue)
            result = remote.end_round()
            expected = queue.drain(local.pending)
            for got, want in zip(result.episodes, expected, strict=True):
                np.testing.assert_array_equal(got, want)
            assert result.returns.tolist() == [e.team_return for e in finished]
            assert int(result.waves.sum()) == len(finished)
            episodes += len(finished)
            env_steps += n_steps * cfg.n_envs
        assert episodes == 2 * cfg.n_envs  # two waves of 25-step episodes ended in the rounds
        state, arrays = remote.snapshot()
        want_state, want_arrays = local.snapshot()
        assert state == want_state
        for name, value in want_arrays.items():
            np.testing.assert_array_equal(arrays[name], value)
    finally:
        remote.close()


def test_background_evaluation_equals_an_evaluation_in_process() -> None:
    cfg = TrainConfig.from_dict(tiny(**SPREAD, eval_episodes=3))
    spec = BatchedSimpleSpread(1).spec
    seeds = [11, 12, 13]
    torch.manual_seed(4)
    net = build_models(cfg, spec)[0]
    with make_eval_envs(cfg) as venv:
        expected = evaluate(net, venv, seeds, spec.episode_limit)
    remote = CollectorProcess(cfg, "batched", spec, *_rngs(0), eval_seeds=seeds)
    try:
        remote.start()
        remote.begin_evaluation(7, weights_of(net))
        rounds = 0
        while True:  # one evaluation step per round: 25 rounds for 25-step episodes
            remote.begin_round(weights_of(net), rounds * cfg.n_envs, 1)
            rounds += 1
            done = remote.end_round().evaluation
            if done is not None:
                break
        assert (rounds, done) == (spec.episode_limit, (7, expected))
        assert remote.finish_evaluation() is None
        remote.begin_evaluation(8, weights_of(net))  # finished at once on request
        assert remote.finish_evaluation() == (8, expected)
    finally:
        remote.close()


def test_a_dead_collector_process_is_reported() -> None:
    cfg = TrainConfig.from_dict(tiny(**SPREAD))
    spec = BatchedSimpleSpread(1).spec
    remote = CollectorProcess(cfg, "batched", spec, *_rngs(0), eval_seeds=[1, 2])
    try:
        remote.start()
        os.kill(remote.pid, signal.SIGKILL)
        with pytest.raises(CollectorProcessError, match=r"exited unexpectedly \(exit code -9\)"):
            remote.snapshot()
    finally:
        remote.close()


def test_overlapped_runs_are_deterministic_per_seed(tmp_path: Path) -> None:
    cfg = tiny(**SPREAD, overlap=True, overlap_round_steps=3, eval_interval=400, log_interval=100)
    runs = []
    for name in ("a", "b"):
        trainer = Trainer("qmix", env="simple_spread", seed=3, config=cfg, run_dir=tmp_path / name)
        result = trainer.train(total_timesteps=1200)
        assert result["updates"] > 20
        runs.append(trainer)
    a, b = (tmp_path / "a", tmp_path / "b")
    assert _records(a, "train/loss") == _records(b, "train/loss")
    assert _records(a, "eval/return_mean") == _records(b, "eval/return_mean")
    wa, wb = (r.agent_net.state_dict() for r in runs)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_overlap_collects_what_inline_collects_when_actions_ignore_the_policy(
    tmp_path: Path,
) -> None:
    # With epsilon 1 every action is the exploration stream's, whatever the weights: the two
    # schedules must then collect the very same episodes (same env seeds, same actions).
    # Records every 96 env steps: a boundary of both schedules (rounds of 6 x 4 env steps).
    base = tiny(**SPREAD, epsilon_start=1.0, epsilon_end=1.0, log_interval=96)
    curves = {}
    for overlap in (False, True):
        cfg = {**base, "overlap": overlap, "overlap_round_steps": 6}
        run_dir = tmp_path / str(overlap)
        trainer = Trainer("qmix", env="simple_spread", seed=1, config=cfg, run_dir=run_dir)
        result = trainer.train(total_timesteps=960)
        curves[overlap] = (_records(run_dir, "rollout/ep_return_mean"), result["episodes"])
    assert curves[True] == curves[False]
    assert len(curves[True][0]) == 9  # from the first finished episodes on


def test_policy_lag_is_at_most_one_round_of_updates(tmp_path: Path) -> None:
    # 4 envs x 10 vector steps per round = 40 env steps = 2 updates at one per 20 env steps.
    lags = {}
    for overlap in (False, True):
        cfg = tiny(**SPREAD, overlap=overlap, overlap_round_steps=10, log_interval=40)
        run_dir = tmp_path / str(overlap)
        Trainer("vdn", env="simple_spread", seed=0, config=cfg, run_dir=run_dir).train(1600)
        lags[overlap] = {v for step, v in _records(run_dir, "rollout/policy_lag") if step > 400}
    assert lags[False] == {0.0}
    assert lags[True] == {2.0}


def test_a_learning_run_overlapped_reaches_the_two_step_optimum(tmp_path: Path) -> None:
    cfg = tiny(**TWO_STEP_PAPER, overlap=True, overlap_round_steps=4)
    trainer = Trainer("qmix", env="two_step", seed=0, config=cfg, run_dir=tmp_path / "r")
    result = trainer.train(total_timesteps=4000)
    assert trainer.vector_kind == "sync"
    assert result["updates"] > 1900
    assert result["mean_reward"] == 8.0


def test_an_env_error_in_the_child_keeps_its_type_and_details(tmp_path: Path) -> None:
    # A faulty episode about every 40 (none among seed 0's evaluation episodes, which run here).
    kwargs = {"fault": "state", "at_step": 2, "seed_modulus": 40}
    cfg = tiny(n_agents=2, n_envs=2, batch_size=4, env_kwargs=kwargs, overlap=True)
    trainer = Trainer("qmix", env="faulty_envs:faulty_team", seed=0, config=cfg, run_dir=tmp_path)
    assert all(s % 40 for s in trainer.eval_seeds)
    with pytest.raises(NonFiniteInputError, match=r"state.* at step 2 of the episode") as e:
        trainer.train(total_timesteps=5_000)
    assert (e.value.field, e.value.step) == ("state", 2)
    assert isinstance(e.value.__cause__, RemoteTraceback)  # the child's own traceback


def test_overlap_refuses_worker_process_engines() -> None:
    with pytest.raises(ConfigError, match=r"overlap .* needs an in-process engine"):
        Trainer("qmix", env="two_step", config=tiny(overlap=True, vector="subprocess"))
