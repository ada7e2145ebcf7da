"""The device's artifact store: the policy versions an agent can run, installed only once verified.

Layout under the store's root::

    versions/<version>/   complete artifact sets, each verified before it was moved here
    incoming/<version>/   a download in progress: offer.json and the files received so far
    state.json            {"current": version, "previous": version}: what this agent runs, and
                          the last known good one before it (replaced atomically)

A version is the sha256 of the set's ``manifest.json`` (`qmix_edge.runtime.rollout.Offer`).
A download is resumable: each file is appended in order and fsynced per chunk, so after a crash
or a lost link the agent asks for the bytes from where its file ends. Nothing is installed before
every file's sha256 matches the offer, the manifest's Ed25519 signature verifies (when the store
has a public key, a signature is required), every graph matches the manifest, and the caller's
own check (e.g. loading this agent's graph into onnxruntime) passes; a set that fails is deleted
and the reason raised. Switching (`activate`) only changes ``state.json``: a restarted agent comes
back on the version it last ran. No torch and no grpc here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qmix_edge.common import atomic

from ..artifact import ArtifactError, Manifest, PublicKeyLike
from ..rollout import Offer, RolloutError, offer_for
from ..tensors import MANIFEST_FILE

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
OFFER_FILE = "offer.json"


class ArtifactStore:
    """Verified artifact sets on this device, and which one it runs."""

    def __init__(self, root: str | os.PathLike[str], public_key: PublicKeyLike | None = None):
        self.root = Path(root)
        self.public_key = public_key
        """Ed25519 key every set must be signed with; None: unsigned sets are accepted."""
        for sub in ("versions", "incoming"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------------------- what is here
    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.root / STATE_FILE).read_text())
        except FileNotFoundError:
            return {"current": None, "previous": None}
        except ValueError as e:
            raise RolloutError(f"{self.root / STATE_FILE} is not valid JSON ({e})") from e
        return state if isinstance(state, dict) else {"current": None, "previous": None}

    @property
    def current(self) -> str | None:
        """The version this agent runs (None before the first install)."""
        v = self._state().get("current")
        return v if isinstance(v, str) and self.has(v) else None

    @property
    def previous(self) -> str | None:
        """The last known good version before `current` (what `rollback` returns to)."""
        v = self._state().get("previous")
        return v if isinstance(v, str) and self.has(v) else None

    def has(self, version: str) -> bool:
        """Whether ``version`` is installed (complete and verified)."""
        return (self.root / "versions" / version / MANIFEST_FILE).is_file()

    def path(self, version: str | None = None) -> Path:
        """The folder of ``version`` (default: the current one)."""
        v = self.current if version is None else version
        if v is None or not self.has(v):
            raise RolloutError(
                f"version {v!r} is not installed in {self.root}; installed: {self.versions()}"
            )
        return self.root / "versions" / v

    def versions(self) -> list[str]:
        """Installed versions."""
        return sorted(
            p.name for p in (self.root / "versions").iterdir() if (p / MANIFEST_FILE).is_file()
        )

    # ------------------------------------------------------------------------------ installing
    def begin(self, offer: Offer) -> Download:
        """Start (or resume) downloading ``offer``. An incoming folder left by another offer of
        the same version is discarded."""
        folder = self.root / "incoming" / offer.version
        meta = folder / OFFER_FILE
        if folder.exists():
            try:
                same = Offer.from_dict(json.loads(meta.read_text())) == offer
            except (OSError, ValueError, RolloutError):
                same = False
            if not same:
                shutil.rmtree(folder)
        if not folder.exists():
            folder.mkdir(parents=True)
            atomic.write_json(meta, offer.to_dict())
        return Download(self, offer, folder)

    def add_local(
        self, artifact_dir: str | os.PathLike[str], check: Callable[[Path], None] | None = None
    ) -> str:
        """Install a set from a local folder (first provisioning), through the same checks as a
        download; returns its version."""
        offer = offer_for(artifact_dir)
        if self.has(offer.version):
            return offer.version
        d = self.begin(offer)
        for f in offer.files:
            d.write(f.name, 0, (Path(artifact_dir) / f.name).read_bytes())
        d.stage(check)
        return offer.version

    def activate(self, version: str) -> None:
        """Run ``version`` from now on (it must be installed); the version run so far becomes the
        last known good. Atomic: a crash leaves either the old or the new choice."""
        if not self.has(version):
            raise RolloutError(f"cannot switch to {version[:12]}: it is not staged in {self.root}")
        current = self.current
        if current == version:
            return
        atomic.write_json(self.root / STATE_FILE, {"current": version, "previous": current})
        log.info(
            "artifact store: now running %s (previous %s)", version[:12], (current or "none")[:12]
        )

    def rollback(self) -> str:
        """Go back to the last known good version; returns it."""
        prev = self.previous
        if prev is None:
            raise RolloutError(f"no previous version to roll back to in {self.root}")
        atomic.write_json(self.root / STATE_FILE, {"current": prev, "previous": self.current})
        return prev

    def prune(self) -> list[str]:
        """Delete installed versions other than the current and previous; returns them."""
        keep = {self.current, self.previous}
        gone = [v for v in self.versions() if v not in keep]
        for v in gone:
            shutil.rmtree(self.root / "versions" / v, ignore_errors=True)
        return gone


class Download:
    """One offer being received into ``incoming/<version>/``: append chunks in order, then
    `stage` (verify everything, then install)."""

    def __init__(self, store: ArtifactStore, offer: Offer, folder: Path) -> None:
        self.store, self.offer, self.folder = store, offer, folder

    def have(self, name: str) -> int:
        """Bytes of ``name`` received so far."""
        try:
            return (self.folder / name).stat().st_size
        except FileNotFoundError:
            return 0

    def next_needed(self) -> tuple[str, int] | None:
        """(file, offset) to ask for next, or None when every file is complete."""
        for f in self.offer.files:
            got = self.have(f.name)
            if got < f.size:
                return f.name, got
        return None

    @property
    def received_bytes(self) -> int:
        return sum(min(self.have(f.name), f.size) for f in self.offer.files)

    def write(self, name: str, offset: int, data: bytes) -> None:
        """Append ``data`` to ``name`` at ``offset`` (which must be where the file ends now)."""
        f = self.offer.file(name)
        got = self.have(name)
        if offset != got:
            raise RolloutError(
                f"{name}: chunk at offset {offset}, but {got} bytes are here; ask for {got}"
            )
        if got + len(data) > f.size:
            raise RolloutError(f"{name}: {got + len(data)} bytes exceed the offered {f.size}")
        with open(self.folder / name, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def stage(self, check: Callable[[Path], None] | None = None) -> Path:
        """Verify the complete set and install it under ``versions/``; returns its folder.

        Checks, in order: every file complete with the offered sha256; the manifest's signature
        (required when the store has a public key) and every graph's sha256 against the manifest;
        then ``check(folder)`` (the caller's own test, e.g. loading its graph). Any failure deletes
        the download and raises `RolloutError` naming the reason; nothing is installed."""
        try:
            missing = self.next_needed()
            if missing is not None:
                raise RolloutError(
                    f"the download is incomplete: {missing[0]} has {missing[1]} bytes"
                )
            for f in self.offer.files:
                digest = hashlib.sha256((self.folder / f.name).read_bytes()).hexdigest()
                if digest != f.sha256:
                    raise RolloutError(
                        f"{f.name}: sha256 {digest[:12]}... does not match the offer's {f.sha256[:12]}..."
                    )
            try:
                Manifest.load(self.folder, public_key=self.store.public_key)
                if check is not None:
                    check(self.folder)
            except ArtifactError as e:
                raise RolloutError(f"version {self.offer.version[:12]} refused: {e}") from e
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        (self.folder / OFFER_FILE).unlink()
        final = self.store.root / "versions" / self.offer.version
        if final.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
            return final
        os.replace(self.folder, final)
        atomic.fsync_dir(final.parent)
        with contextlib.suppress(OSError):
            atomic.fsync_dir(self.folder.parent)
        return final
