"""``sshvfs demo``: mount a local directory through the embedded SSH server, for newcomers."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import threading

from ..config import MountOptions, Target, apply_options
from .demoserver import DemoServer
from .mount import Mount, check_mountpoint, unmount

log = logging.getLogger(__name__)

SAMPLE_FILES = {
    "README.txt": "This directory is served by sshvfs's embedded SSH server on 127.0.0.1.\n"
    "Everything you do in the mount goes over SSH/SFTP to here.\n",
    "docs/notes.md": "# notes\n\n- edit me through the mount\n",
    "docs/with space & quote's.txt": "hostile names round-trip\n",
}


def make_sample(directory: str) -> None:
    for rel, text in SAMPLE_FILES.items():
        path = os.path.join(directory, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def _round_trip(mountpoint: str) -> bool:
    """What ``--once`` shows: list, write, read back, compare."""
    names = sorted(os.listdir(mountpoint))
    print(f"listing of {mountpoint}: {', '.join(names)}")
    probe = os.path.join(mountpoint, "hello-from-sshvfs.txt")
    text = "written through the mount over SFTP\n"
    with open(probe, "w", encoding="utf-8") as f:
        f.write(text)
    with open(probe, encoding="utf-8") as f:
        back = f.read()
    ok = back == text
    print(f"wrote and read back {probe}: {'ok' if ok else 'MISMATCH'}")
    return ok


def run_demo(mountpoint: str | None, serve: str | None, once: bool, options: list[str]) -> int:
    temp: list[str] = []
    if serve is None:
        serve = tempfile.mkdtemp(prefix="sshvfs-demo-data-")
        temp.append(serve)
        make_sample(serve)
    if mountpoint is None:
        mountpoint = tempfile.mkdtemp(prefix="sshvfs-demo-mnt-")
        temp.append(mountpoint)
    mountpoint = check_mountpoint(mountpoint)
    server = DemoServer(serve)
    opts = apply_options(MountOptions(), options)
    mount = Mount(Target("127.0.0.1", path=os.fsencode(os.path.abspath(serve))), mountpoint, opts)
    result = {"ok": True}
    endpoint = None

    async def start_server() -> None:
        nonlocal endpoint
        async with asyncio.timeout(30):
            endpoint = await server.start()
        opts.port = endpoint.port
        opts.identity_files = [endpoint.client_key]
        opts.known_hosts = endpoint.known_hosts

    def ready() -> None:
        assert endpoint is not None
        print(
            f"sshvfs demo: {serve} is mounted on {mountpoint} over SSH (127.0.0.1:{endpoint.port})",
            flush=True,
        )
        if once:

            def check_and_unmount() -> None:
                try:
                    result["ok"] = _round_trip(mountpoint)
                except OSError as exc:
                    print(f"sshvfs demo: {exc}", file=sys.stderr)
                    result["ok"] = False
                finally:
                    unmount(mountpoint)

            # a thread of its own: its file operations are served on this loop
            threading.Thread(target=check_and_unmount, daemon=True).start()
        else:
            print("press Ctrl-C (or run: sshvfs umount MOUNTPOINT) to unmount", flush=True)

    async def main() -> None:
        try:
            await mount.run_async(before=start_server)
            print("sshvfs demo: unmounted", flush=True)
        finally:
            try:
                async with asyncio.timeout(10):
                    await server.close()
            except Exception:
                log.debug("stopping the demo server failed", exc_info=True)

    mount.on_ready = ready
    try:
        asyncio.run(main())
    finally:
        for path in reversed(temp):
            if not os.path.ismount(path):
                shutil.rmtree(path, ignore_errors=True)
    return 0 if result["ok"] else 1
