"""A lease: at most one live process holds a named claim in the lake (a local or mounted filesystem).

Used for one shard of LLM labelling (``layout.shard_lease_path``) and for the one-off migration of the label
store's keys (``layout.store_lease_path``), so two workers never pay the judge for the same pairs.

* **Acquire**: the lease file is created with ``os.open(O_CREAT | O_EXCL)`` (atomic: of two processes exactly
  one succeeds) and holds JSON ``{token, holder, host, pid, boot_id, acquired_at, ttl_s, ...}``.
* **Heartbeat**: while held, a daemon thread touches the file's mtime every ``ttl_s / 4`` seconds and checks
  that the file still holds its token; ``check()`` (called before every paid judge call) raises ``LeaseLost``
  when it does not.
* **Stale**: the mtime is older than ``ttl_s`` (the holder stopped beating: killed, frozen, machine gone), or the
  holder ran on this very machine (same host name and boot id) and its pid is gone or a zombie.
* **Takeover**: a stale lease is renamed to a unique tombstone (``os.rename`` is atomic: of several contenders
  one wins), the tombstone is checked to be the lease judged stale (same inode and token; otherwise it is put
  back with ``os.link``, which never overwrites), removed, and the lease is created again with O_EXCL.
  ``taken_over`` records the stale holder.
* **Release**: the holder removes the file (only if it still holds its token).

Clocks: staleness compares this machine's clock with the file's mtime, so hosts sharing a mounted lake need
clocks within a small fraction of ``ttl_s`` (NTP).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from keyphrase_pipeline.core.errors import ConfigError, KPError
from keyphrase_pipeline.core.lake import is_local, local_path

log = logging.getLogger(__name__)

HOST = socket.gethostname()


class LeaseBusy(KPError):
    """Another live worker held the lease for longer than the wait allowed. Exit code 1: retry later."""


class LeaseLost(KPError):
    """This worker's lease was taken over (its heartbeat stalled past ttl). Exit code 1: the other worker goes on."""


def boot_id() -> str:
    """This machine's boot id (Linux), so a pid is only compared on the machine and boot that issued it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


BOOT_ID = boot_id()


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs on this machine and is not a zombie."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_lease(path: str) -> dict | None:
    """The lease at ``path`` with ``age_s`` (seconds since its last heartbeat) and ``inode``, or None."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
        with open(p) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text) if text.strip() else {}
    except ValueError:
        info = {}  # being written (created, not yet filled): judged by its mtime only
    if not isinstance(info, dict):
        info = {}
    info["age_s"] = round(time.time() - st.st_mtime, 3)
    info["inode"] = st.st_ino
    return info


def stale_reason(info: dict, ttl_s: float) -> str | None:
    """Why the lease ``info`` (from ``read_lease``) may be taken over, or None while its holder lives."""
    if info["age_s"] > ttl_s:
        return f"no heartbeat for {info['age_s']:.0f}s (ttl {ttl_s:g}s)"
    if info.get("host") == HOST and info.get("boot_id") == BOOT_ID and info.get("pid") and not pid_alive(info["pid"]):
        return f"holder pid {info['pid']} on this host is gone"
    return None


def describe(info: dict | None) -> str:
    if not info:
        return "nobody"
    return f"{info.get('holder', '?')} (heartbeat {info.get('age_s', 0):.0f}s ago)"


class Lease:
    """One named lease (see the module docstring). Use ``acquire`` then ``release`` (or ``with``)."""

    def __init__(self, path: str, ttl_s: float, what: str = "", extra: dict | None = None):
        if not is_local(path):
            raise ConfigError(f"leases need a local or mounted lake_root (O_EXCL files), got {path}")
        self.path = str(local_path(path))
        self.ttl_s = float(ttl_s)
        self.what = what or self.path
        self.token = uuid.uuid4().hex
        self.holder = f"{HOST}:{os.getpid()}:{self.token[:8]}"
        self.extra = dict(extra or {})
        self.taken_over: dict | None = None
        self.last_seen: dict | None = None  # the other holder seen while waiting
        self.held = False
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- acquiring -----------------------------------------------------------------------------------
    def _create(self) -> bool:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        body = {"token": self.token, "holder": self.holder, "host": HOST, "pid": os.getpid(), "boot_id": BOOT_ID,
                "acquired_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "ttl_s": self.ttl_s,
                "what": self.what, **self.extra}
        if self.taken_over:
            body["took_over_from"] = {k: self.taken_over.get(k) for k in ("holder", "age_s", "reason")}
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _take_over(self, info: dict, reason: str) -> None:
        """Remove the stale lease ``info`` unless someone replaced it meanwhile (see the module docstring)."""
        tomb = f"{self.path}.stale-{self.token}"
        try:
            os.rename(self.path, tomb)
        except FileNotFoundError:
            return  # another contender removed it first
        moved = read_lease(tomb) or {}
        if moved.get("inode") != info.get("inode") or moved.get("token") != info.get("token"):
            try:  # we moved a fresh lease created after our look: put it back (never over a newer one)
                os.link(tomb, self.path)
            except FileExistsError:
                pass
            os.unlink(tomb)
            return
        os.unlink(tomb)
        self.taken_over = {**info, "reason": reason}
        log.warning("%s: took over the stale lease of %s: %s", self.what, info.get("holder", "?"), reason)

    def try_acquire(self) -> bool:
        """One attempt: create the lease, or take over a stale one and create it. True when held."""
        if self.held:
            return True
        for _ in range(3):
            if self._create():
                self._start()
                return True
            info = read_lease(self.path)
            if info is None:
                continue  # released between our two looks
            reason = stale_reason(info, self.ttl_s)
            if reason is None:
                self.last_seen = info
                return False
            self._take_over(info, reason)
        return False

    def acquire(self, wait_s: float, poll_s: float | None = None,
                stop_waiting: Callable[[], bool] | None = None) -> bool:
        """Hold the lease, waiting up to ``wait_s`` seconds while another live worker holds it.

        Returns True when held; False when ``stop_waiting()`` became true while waiting (e.g. the other worker
        finished the work). Raises LeaseBusy (exit 1) after ``wait_s`` seconds."""
        poll = poll_s if poll_s is not None else min(max(self.ttl_s / 20, 0.05), 5.0)
        start = time.monotonic()
        logged = False
        while True:
            if self.try_acquire():
                return True
            if stop_waiting is not None and stop_waiting():
                return False
            waited = time.monotonic() - start
            if waited >= wait_s:
                raise LeaseBusy(f"{self.what} is held by {describe(self.last_seen)}; waited {waited:.0f}s "
                                f"(judge.lease_wait_s={wait_s:g}); retry later")
            if not logged:
                log.info("%s is held by %s: waiting (up to %.0fs)", self.what, describe(self.last_seen), wait_s)
                logged = True
            time.sleep(min(poll, max(wait_s - waited, 0.01)))

    # ---- holding -------------------------------------------------------------------------------------
    def _start(self) -> None:
        self.held = True
        self._lost = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                info = read_lease(self.path)
                if info is None or info.get("token") != self.token:
                    self._lost = f"now held by {describe(info)}"
                    return
                os.utime(self.path)
            except OSError as exc:  # a flaky mount: try again at the next beat
                log.warning("%s: heartbeat failed: %s", self.what, exc)

    def check(self) -> None:
        """Raise LeaseLost unless this process still holds the lease (read from the file, not cached)."""
        if not self.held:
            raise LeaseLost(f"{self.what}: not holding the lease")
        info = read_lease(self.path)
        if self._lost or info is None or info.get("token") != self.token:
            raise LeaseLost(f"{self.what}: lease lost ({self._lost or 'now held by ' + describe(info)}); "
                            "another worker goes on with it")

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        if not self.held:
            return
        self.held = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info = read_lease(self.path)
        if info is not None and info.get("token") == self.token:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
