"""Vector envs: stepping them equals stepping the single envs; no auto-reset; worker errors surface."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from qmix_edge.envs import (
    EnvError,
    EnvFactory,
    SubprocVectorEnv,
    SyncVectorEnv,
    VectorTeamEnv,
    make_env,
    make_vector_env,
)


def _run_against_singles(vec: VectorTeamEnv, factory: EnvFactory, steps: int) -> None:
    """Drive ``vec`` and one single env per slot with the same seeds and actions; compare all."""
    n = vec.n_envs
    singles = [factory() for _ in range(n)]
    rng = np.random.default_rng(0)
    seeds = [100 + i for i in range(n)]
    ts = vec.reset_all(seeds)
    views = [s.reset(seed=seeds[i]) for i, s in enumerate(singles)]
    running = [True] * n
    next_seed = 1000
    for _ in range(steps):
        for name in ("obs", "avail", "alive", "state"):
            np.testing.assert_array_equal(
                getattr(ts, name), np.stack([getattr(v, name) for v in views])
            )
        acts = np.stack([np.array([rng.choice(np.flatnonzero(r)) for r in v.avail]) for v in views])
        res = vec.step(acts)
        np.testing.assert_array_equal(res.active, running)
        for i, s in enumerate(singles):
            if not running[i]:
                assert res.reward[i] == 0 and not res.terminated[i] and not res.truncated[i]
                continue
            r = s.step(acts[i])
            views[i] = r.next
            assert res.reward[i] == np.float32(r.reward)
            assert (res.terminated[i], res.truncated[i]) == (r.terminated, r.truncated)
            np.testing.assert_array_equal(res.agent_rewards[i], r.agent_rewards)
            running[i] = not r.done
        np.testing.assert_array_equal(vec.finished, [not x for x in running])
        ts = res.next
        # reset only some of the finished envs (in reverse order): no auto-reset for the others
        done = [i for i in range(n) if not running[i]][::-2]
        if done:
            seeds = list(range(next_seed, next_seed + len(done)))
            next_seed += len(done)
            first = vec.reset_envs(done, seeds)
            for k, i in enumerate(done):
                views[i] = singles[i].reset(seed=seeds[k])
                running[i] = True
                np.testing.assert_array_equal(first.obs[k], views[i].obs)
            ts = ts._replace(
                **{
                    name: np.stack([getattr(v, name) for v in views])
                    for name in ("obs", "avail", "alive", "state")
                }
            )


def test_envs_sync_vector_equals_single_envs() -> None:
    factory = EnvFactory("leaving_agents", env_kwargs={"lifetimes": (1, 2, 4), "max_cycles": 5})
    vec = SyncVectorEnv([factory() for _ in range(3)])
    _run_against_singles(vec, factory, steps=30)


def test_envs_subproc_vector_equals_single_envs() -> None:
    factory = EnvFactory("masked_choice", n_agents=2, env_kwargs={"max_cycles": 3})
    with SubprocVectorEnv([factory] * 5, n_workers=2) as vec:
        assert vec.spec == factory().spec
        _run_against_singles(vec, factory, steps=20)


def test_envs_subproc_simple_spread_matches_sync() -> None:
    sync = make_vector_env("simple_spread", 3)
    with make_vector_env("simple_spread", 3, backend="subproc", n_workers=2) as sub:
        a, b = sync.reset_all([1, 2, 3]), sub.reset_all([1, 2, 3])
        np.testing.assert_array_equal(a.state, b.state)
        acts = np.array([[0, 1, 2], [3, 4, 0], [1, 1, 1]])
        for _ in range(25):
            ra, rb = sync.step(acts), sub.step(acts)
            np.testing.assert_array_equal(ra.next.obs, rb.next.obs)
            np.testing.assert_array_equal(ra.reward, rb.reward)
        assert ra.truncated.all() and sync.finished.all() and sub.finished.all()
        # finished envs ignore actions and are not stepped
        assert not sub.step(acts).active.any()


def test_envs_vector_argument_errors() -> None:
    vec = make_vector_env("two_step", 2)
    with pytest.raises(EnvError, match=r"expected actions of shape \(2, 2\)"):
        vec.step(np.zeros((3, 2), np.int64))
    with pytest.raises(EnvError, match=r"env indices must be in \[0, 2\); found \[2\]"):
        vec.reset_envs([2])
    with pytest.raises(EnvError, match="must be distinct"):
        vec.reset_envs([0, 0])
    with pytest.raises(EnvError, match=r"one seed per index \(2\); found 1"):
        vec.reset_envs([0, 1], [5])
    with pytest.raises(EnvError, match="were never reset"):
        vec.reset_envs([0])
        vec.step(np.zeros((2, 2), np.int64))
    with pytest.raises(EnvError, match="backend must be 'sync', 'subproc', 'ray' or 'batched'"):
        make_vector_env("two_step", 2, backend="threads")
    with pytest.raises(EnvError, match="share one spec"):
        SyncVectorEnv([make_env("two_step"), make_env("penalty")])
    assert vec.reset_envs([]).obs.shape == (0, 2, 3)


def test_envs_subproc_worker_errors_reach_the_parent() -> None:
    boom = EnvFactory("envs_fakes:ExplodingEnv", env_kwargs={"fail_at": 2})
    with SubprocVectorEnv([boom, boom, boom], n_workers=2) as vec:
        # an EnvError raised inside a worker keeps its type and message
        with pytest.raises(EnvError, match=r"envs \[0, 1\] were never reset"):
            vec.step(np.zeros((3, 2), np.int64))
        vec.reset_all([0, 1, 2])
        vec.step(np.zeros((3, 2), np.int64))
        with pytest.raises(
            EnvError, match=r"env worker 0 \(envs 0\.\.1\) failed: RuntimeError: boom at step 2"
        ) as info:
            vec.step(np.zeros((3, 2), np.int64))
        assert "boom at step 2" in str(info.value.__cause__)  # the remote traceback
        # the workers stay usable after an error
        vec.reset_all([0, 1, 2])
        with pytest.raises(EnvError, match="action 7 is not available to agent 'a'"):
            vec.step(np.full((3, 2), 7, np.int64))
        # an unavailable action is rejected before any env of the slice steps (env 2 is in worker 1)
        acts = np.zeros((3, 2), np.int64)
        acts[2, 1] = 9
        with pytest.raises(
            EnvError, match=r"env 2: action 9 is not available to agent 'b'.*No env was stepped"
        ):
            vec.step(acts)

    bad = EnvFactory("envs_fakes:continuous_env")
    with pytest.raises(EnvError, match="continuous action space"):
        SubprocVectorEnv([bad, bad], n_workers=2)


def test_envs_subproc_worker_death_is_reported() -> None:
    dies = EnvFactory("envs_fakes:ExplodingEnv", env_kwargs={"fail_at": 1, "how": "exit"})
    vec = SubprocVectorEnv([dies], n_workers=1)
    try:
        vec.reset_all([0])
        with pytest.raises(EnvError, match=r"exited unexpectedly \(exit code 3\)"):
            vec.step(np.zeros((1, 2), np.int64))
        with pytest.raises(EnvError, match="unusable"):
            vec.reset_all([0])
    finally:
        vec.close()
    with pytest.raises(EnvError, match="closed"):
        vec.reset_all([0])


@pytest.mark.parametrize("backend", ["sync", "subproc"])
def test_envs_step_async_then_wait_equals_step(backend: str) -> None:
    ref = make_vector_env("speaker_pair", 3)
    with make_vector_env("speaker_pair", 3, backend=backend, n_workers=1) as vec:
        seeds = [4, 5, 6]
        np.testing.assert_array_equal(ref.reset_all(seeds).obs, vec.reset_all(seeds).obs)
        acts = np.array([[0, 1], [1, 2], [2, 4]])
        vec.step_async(acts)
        with pytest.raises(EnvError, match="already in progress"):
            vec.step_async(acts)
        got, want = vec.step_wait(), ref.step(acts)
        np.testing.assert_array_equal(got.next.obs, want.next.obs)
        np.testing.assert_array_equal(got.reward, want.reward)
        with pytest.raises(EnvError, match="no step in progress"):
            vec.step_wait()


def test_envs_subproc_needs_picklable_factories() -> None:
    with pytest.raises(EnvError, match=r"must be picklable .* use EnvFactory"):
        SubprocVectorEnv([lambda: make_env("two_step")], n_workers=1)


def _ignores_sigint(pid: int) -> bool:
    """The kernel's record of the process's ignored signals (/proc/<pid>/status, SigIgn)."""
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(next(x for x in status.splitlines() if x.startswith("SigIgn:")).split()[1], 16)
    return bool(ignored & (1 << (signal.SIGINT - 1)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_envs_subproc_workers_ignore_sigint() -> None:
    with make_vector_env("two_step", 2, backend="subproc", n_workers=1) as vec:
        vec.reset_all([0, 1])
        (pid,) = vec.worker_pids
        assert _ignores_sigint(pid)
        os.kill(pid, signal.SIGINT)  # an ignored signal is discarded when it is sent
        assert vec.step(np.zeros((2, 2), np.int64)).active.all()


def test_envs_subproc_workers_are_reaped_by_close_and_by_garbage_collection() -> None:
    import gc

    import psutil

    vec = make_vector_env("two_step", 2, backend="subproc", n_workers=2)
    pids = vec.worker_pids
    assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
    vec.close()
    vec.close()  # idempotent
    assert vec.worker_pids == [] and not any(_running(p) for p in pids)
    with pytest.raises(EnvError, match="closed"):
        vec.reset_all([0, 1])

    vec = make_vector_env("two_step", 2, backend="subproc", n_workers=2)
    pids = vec.worker_pids
    del vec
    gc.collect()
    assert not any(_running(p) for p in pids)


def test_envs_subproc_one_dead_worker_stops_the_others() -> None:
    dies = EnvFactory("envs_fakes:ExplodingEnv", env_kwargs={"fail_at": 1, "how": "exit"})
    fine = EnvFactory("envs_fakes:ExplodingEnv", env_kwargs={"fail_at": 100})
    vec = SubprocVectorEnv([dies, fine, fine], n_workers=2)
    pids = vec.worker_pids
    vec.reset_all([0, 1, 2])
    with pytest.raises(EnvError, match="exited unexpectedly"):
        vec.step(np.zeros((3, 2), np.int64))
    assert not any(_running(p) for p in pids)  # the healthy worker was reaped mid-step too
    vec.close()


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_envs_sync_bad_joint_action_steps_no_env() -> None:
    vec = make_vector_env("leaving_agents", 3, env_kwargs={"max_cycles": 20})
    first = vec.reset_all([0, 1, 2])
    acts = np.zeros((3, 3), np.int64)
    acts[1, 2] = 5
    with pytest.raises(EnvError, match=r"env 1: action 5 is not available to agent 'agent_2'"):
        vec.step(acts)
    # nothing moved: env 0 still answers as at its first step
    ref = make_env("leaving_agents", env_kwargs={"max_cycles": 20})
    ref.reset(seed=0)
    res = vec.step(np.zeros((3, 3), np.int64))
    np.testing.assert_array_equal(res.next.obs[0], ref.step(np.zeros(3, np.int64)).next.obs)
    assert first.obs.shape == (3, 3, 4)
