"""Signed rollout's device half: offers, chunked resumable downloads, verification before install,
and the store's current / last-known-good versions across restarts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qmix_edge.runtime.agent.store import ArtifactStore
from qmix_edge.runtime.artifact import SIGNATURE_FILE
from qmix_edge.runtime.policy import AgentPolicy
from qmix_edge.runtime.rollout import Offer, OfferFile, RolloutError, offer_for, read_chunk
from qmix_edge.runtime.tensors import MANIFEST_FILE


@pytest.fixture(scope="module")
def exports(rollout_sets: dict[str, Path]) -> dict[str, Path]:
    return rollout_sets


def download(store: ArtifactStore, source: Path, chunk: int, stop_after: int | None = None) -> int:
    """Fetch ``source``'s offer into ``store`` chunk by chunk, as an agent does over the link;
    stop after ``stop_after`` chunks (a lost link). Returns the chunks fetched."""
    offer = offer_for(source)
    d = store.begin(offer)
    n = 0
    while (need := d.next_needed()) is not None:
        if stop_after is not None and n == stop_after:
            return n
        name, offset = need
        d.write(name, offset, read_chunk(source, offer, name, offset, chunk))
        n += 1
    return n


def test_an_offer_names_every_file_and_its_version_is_the_manifest_hash(
    exports: dict[str, Path],
) -> None:
    import hashlib

    offer = offer_for(exports["v1"])
    names = {f.name for f in offer.files}
    assert names == {MANIFEST_FILE, SIGNATURE_FILE, "agent_0.onnx", "agent_1.onnx"}
    assert offer.version == hashlib.sha256((exports["v1"] / MANIFEST_FILE).read_bytes()).hexdigest()
    assert Offer.from_dict(json.loads(json.dumps(offer.to_dict()))) == offer
    assert offer_for(exports["v2"]).version != offer.version


@pytest.mark.parametrize("name", ["../escape", "sub/file", ".hidden", ""])
def test_an_offer_with_a_path_for_a_name_is_refused(exports: dict[str, Path], name: str) -> None:
    offer = offer_for(exports["v1"])
    with pytest.raises(RolloutError, match="plain file name"):
        Offer(offer.version, (*offer.files, OfferFile(name, 1, "0" * 64)))


def test_an_offer_whose_version_is_not_its_manifest_hash_is_refused(
    exports: dict[str, Path],
) -> None:
    offer = offer_for(exports["v1"])
    with pytest.raises(RolloutError, match=r"sha256 of its manifest\.json"):
        Offer("f" * 64, offer.files)


def test_an_interrupted_download_resumes_where_it_stopped(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "store", public_key=exports["pub"])
    first = download(store, exports["v1"], chunk=700, stop_after=5)
    # the agent restarts: a new store object on the same folder picks up the partial files
    store = ArtifactStore(tmp_path / "store", public_key=exports["pub"])
    d = store.begin(offer_for(exports["v1"]))
    assert 0 < d.received_bytes < offer_for(exports["v1"]).total_bytes
    rest = download(store, exports["v1"], chunk=700)
    whole = download(ArtifactStore(tmp_path / "other"), exports["v1"], chunk=700)
    assert first + rest == whole  # nothing fetched twice
    folder = store.begin(offer_for(exports["v1"])).stage()
    for f in offer_for(exports["v1"]).files:
        assert (folder / f.name).read_bytes() == (exports["v1"] / f.name).read_bytes()


def test_a_chunk_at_the_wrong_offset_or_past_the_end_is_refused(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "store")
    offer = offer_for(exports["v1"])
    d = store.begin(offer)
    with pytest.raises(RolloutError, match="ask for 0"):
        d.write("agent_0.onnx", 10, b"x")
    size = offer.file(MANIFEST_FILE).size
    with pytest.raises(RolloutError, match="exceed"):
        d.write(MANIFEST_FILE, 0, b"x" * (size + 1))


def test_a_tampered_graph_is_refused_and_nothing_is_installed(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(exports["v2"], bad)
    graph = bad / "agent_1.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    store = ArtifactStore(tmp_path / "store", public_key=exports["pub"])
    # offer_for itself refuses a broken set; a hostile sender offers it anyway, with the
    # tampered file's own hash (so every chunk matches the offer):
    good = offer_for(exports["v2"])
    import hashlib

    files = tuple(
        OfferFile(f.name, f.size, hashlib.sha256(graph.read_bytes()).hexdigest())
        if f.name == "agent_1.onnx"
        else f
        for f in good.files
    )
    offer = Offer(good.version, files)
    d = store.begin(offer)
    for f in offer.files:
        d.write(f.name, 0, (bad / f.name).read_bytes())
    with pytest.raises(RolloutError, match="refused"):
        d.stage()
    assert store.versions() == [] and store.current is None
    assert list((tmp_path / "store" / "incoming").iterdir()) == []


def test_an_unsigned_set_is_refused_by_a_store_with_a_key(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "store", public_key=exports["pub"])
    download(store, exports["unsigned"], chunk=4096)
    with pytest.raises(RolloutError, match="unsigned"):
        store.begin(offer_for(exports["unsigned"])).stage()
    assert store.versions() == []


def test_a_set_this_agent_cannot_load_is_refused(exports: dict[str, Path], tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", public_key=exports["pub"])
    download(store, exports["v1"], chunk=4096)

    def load_agent_7(folder: Path) -> None:
        AgentPolicy.load(folder, "agent_7")

    with pytest.raises(RolloutError, match="agent_7"):
        store.begin(offer_for(exports["v1"])).stage(check=load_agent_7)
    assert store.versions() == []


def test_switching_keeps_the_last_known_good_and_survives_a_restart(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "store", public_key=exports["pub"])
    v1 = store.add_local(exports["v1"])
    store.activate(v1)
    download(store, exports["v2"], chunk=1024)
    v2 = offer_for(exports["v2"]).version
    assert store.current == v1  # staged is not switched
    store.begin(offer_for(exports["v2"])).stage(check=lambda f: AgentPolicy.load(f, "agent_0"))
    assert store.current == v1 and store.has(v2)
    store.activate(v2)
    restarted = ArtifactStore(tmp_path / "store", public_key=exports["pub"])
    assert (restarted.current, restarted.previous) == (v2, v1)
    policy = AgentPolicy.load(restarted.path(), "agent_0", public_key=exports["pub"])
    assert policy.artifact_sha256 == offer_for(exports["v2"]).file("agent_0.onnx").sha256
    assert restarted.rollback() == v1
    assert (restarted.current, restarted.previous) == (v1, v2)
    with pytest.raises(RolloutError, match="not staged"):
        restarted.activate("e" * 64)
