"""Policy rollout's shared half: what an offered artifact set is, and how it is served in chunks.

The coordinator (mission control) offers a new artifact set to the team; each agent downloads it
in bounded chunks into its own `ArtifactStore` (`qmix_edge.runtime.agent.store`), verifies it and
stages it; the team switches together at an episode boundary, or not at all. This module holds
what both ends agree on, independent of the carrier:

- `Offer`: the set's version (the sha256 of its ``manifest.json`` bytes, so the version names the
  exact content: the manifest lists every graph's sha256, and a signature covers the manifest) and
  its files with their sizes and sha256;
- `offer_for`: the offer of an artifact directory (the sending side);
- `read_chunk`: one bounded chunk of an offered file (the sending side).

File names in an offer are plain names (no folders, no ``..``): a hostile offer cannot write
outside the store. No torch here.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .artifact import (
    SIGNATURE_FILE,
    ArtifactCorruptError,
    Manifest,
    read_manifest_bytes,
    sha256_bytes,
)
from .errors import RuntimeFailure
from .tensors import MANIFEST_FILE
from .wire import MAX_MESSAGE_BYTES

CHUNK_BYTES: Final = MAX_MESSAGE_BYTES - 1024
"""Largest chunk one fetch returns: the chunk and its envelope fit one message of the wire's
limit (what mission control sends and agents receive), and an interrupted download loses
little."""
MAX_SET_BYTES: Final = 512 * 1024 * 1024
"""Largest artifact set a store accepts (a device's disk is not unbounded)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RolloutError(RuntimeFailure):
    """An offer, a chunk or a staged artifact set is not acceptable; the message says why."""


@dataclass(frozen=True)
class OfferFile:
    """One file of an offered set."""

    name: str
    """Plain file name inside the set (``manifest.json``, ``agent_0.onnx``, ``manifest.sig``)."""
    size: int
    """Its length in bytes."""
    sha256: str
    """Its sha256, lower-case hex."""


@dataclass(frozen=True)
class Offer:
    """An artifact set offered to the team."""

    version: str
    """sha256 of the set's ``manifest.json`` bytes: the set's identity."""
    files: tuple[OfferFile, ...]
    """Every file of the set, ``manifest.json`` included."""

    def __post_init__(self) -> None:
        if not _SHA256.match(self.version):
            raise RolloutError(
                f"an offer's version is a sha256 (64 hex digits); found {self.version!r}"
            )
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise RolloutError(f"an offer names a file twice: {sorted(names)}")
        if MANIFEST_FILE not in names:
            raise RolloutError(f"an offer must include {MANIFEST_FILE}; found {names}")
        for f in self.files:
            if not _NAME.match(f.name) or f.name in (".", ".."):
                raise RolloutError(
                    f"offered file name {f.name!r} is not a plain file name (letters, digits, "
                    "'.', '_', '-'; no folders)"
                )
            if not _SHA256.match(f.sha256) or f.size < 0:
                raise RolloutError(
                    f"offered file {f.name!r}: bad size {f.size} or sha256 {f.sha256!r}"
                )
        manifest = self.file(MANIFEST_FILE)
        if manifest.sha256 != self.version:
            raise RolloutError(
                f"an offer's version must be the sha256 of its {MANIFEST_FILE} "
                f"({manifest.sha256}); found {self.version}"
            )
        if self.total_bytes > MAX_SET_BYTES:
            raise RolloutError(
                f"the offered set is {self.total_bytes:,} bytes; the store takes at most "
                f"{MAX_SET_BYTES:,}"
            )

    @property
    def total_bytes(self) -> int:
        """Bytes of the whole set."""
        return sum(f.size for f in self.files)

    def file(self, name: str) -> OfferFile:
        """The offered file ``name``; `RolloutError` when the offer has none."""
        for f in self.files:
            if f.name == name:
                return f
        raise RolloutError(f"the offer of {self.version[:12]} has no file {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what a store keeps beside a partial download)."""
        return {
            "version": self.version,
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Offer:
        try:
            return cls(
                str(d["version"]),
                tuple(
                    OfferFile(str(f["name"]), int(f["size"]), str(f["sha256"])) for f in d["files"]
                ),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RolloutError(f"not an offer: {e}") from e


def _sha256_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def artifact_version(artifact_dir: str | os.PathLike[str]) -> str:
    """The version of an artifact set: the sha256 of its ``manifest.json`` bytes."""
    return sha256_bytes(read_manifest_bytes(Path(artifact_dir)))


def offer_for(artifact_dir: str | os.PathLike[str]) -> Offer:
    """The offer of a complete artifact directory: its manifest, every graph it lists (variants
    included) and its signature when there is one. The set is checked first (every listed file's
    sha256), so a broken export is never offered."""
    root = Path(artifact_dir)
    manifest = Manifest.load(root)
    names = [MANIFEST_FILE]
    for a in manifest.agents:
        names.append(a.file)
        names += [v.file for v in a.variants]
    if (root / SIGNATURE_FILE).is_file():
        names.append(SIGNATURE_FILE)
    files = tuple(OfferFile(name, *_sha256_file(root / name)) for name in names)
    return Offer(files[0].sha256, files)  # the version is the manifest's own sha256


def read_chunk(
    artifact_dir: str | Path, offer: Offer, name: str, offset: int, max_bytes: int = CHUNK_BYTES
) -> bytes:
    """Bytes ``[offset, offset + max_bytes)`` of the offered file ``name`` (fewer at its end)."""
    f = offer.file(name)
    if not 0 <= offset <= f.size:
        raise RolloutError(f"{name}: offset {offset} outside the file's {f.size} bytes")
    n = max(0, min(max_bytes, CHUNK_BYTES, f.size - offset))
    path = Path(artifact_dir) / name
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(n)
    except OSError as e:
        raise ArtifactCorruptError(f"cannot read offered file {path}: {e}") from e
    if len(data) != n:
        raise ArtifactCorruptError(f"{path} is shorter than offered ({f.size} bytes); re-export it")
    return data
