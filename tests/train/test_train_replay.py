"""Episode replay: the ring keeps the newest episodes in write order, however many arrive at once."""

from __future__ import annotations

import numpy as np

from qmix_edge.train.replay import EpisodeReplay, empty_episodes


def _episodes(n: int) -> object:
    eps = empty_episodes(n, 2, 1, 1, 1, 2)
    eps.reward[:] = np.arange(n)[:, None]  # episode i is recognisable by its reward
    return eps


def test_adding_wraps_the_ring_and_keeps_the_newest() -> None:
    replay = EpisodeReplay(4, 2, 1, 1, 1, 2, np.random.default_rng(0))
    eps = _episodes(10)
    replay.add(eps, [0, 1, 2])
    assert (len(replay), replay.pos) == (3, 3)
    replay.add(eps, [3, 4])  # wraps: slot 0 is overwritten by episode 4
    assert (len(replay), replay.pos) == (4, 1)
    assert replay.data.reward[:, 0].tolist() == [4, 1, 2, 3]
    replay.add(eps, [5, 6, 7, 8, 9])  # more than the capacity in one call: the last 4 stay
    assert replay.pos == 2
    assert sorted(replay.data.reward[:, 0].tolist()) == [6, 7, 8, 9]
    assert replay.data.reward[1, 0] == 9  # the newest sits just before the write position
