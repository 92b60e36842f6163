"""Ownership: how remote owners and permission bits are presented locally.

sshfs's ``idmap=user``, ``uid=``, ``gid=`` and ``umask=``, as a pure presentation layer used
by :class:`sshvfs.fuse.operations.Operations` when it builds attributes and when it passes a
chown on: the VFS and the server never see anything but the real remote values.

- ``idmap=user``: the remote login user (the owner of the login directory, as sshfs detects
  it) is shown as the local user who mounted, its group as the local user's group; a chown
  to the local user (or group) is sent as the remote one.
- ``uid=N`` / ``gid=N``: every file is shown as owned by N (over idmap).
- ``umask=M``: those permission bits are masked out of every shown mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import MountOptions


@dataclass(frozen=True)
class Ownership:
    #: the remote login user's uid and gid, mapped to ``local_uid``/``local_gid`` (idmap=user)
    remote_uid: int | None = None
    remote_gid: int | None = None
    local_uid: int = -1
    local_gid: int = -1
    #: shown for every file when set (uid=, gid=)
    force_uid: int | None = None
    force_gid: int | None = None
    #: bits masked out of every shown mode (umask=)
    umask: int = 0

    @classmethod
    def from_options(
        cls, opts: MountOptions, remote_uid: int | None = None, remote_gid: int | None = None
    ) -> Ownership:
        """``remote_uid``/``remote_gid``: the login directory's owner (used for idmap=user)."""
        mapping = opts.idmap == "user"
        return cls(
            remote_uid=remote_uid if mapping else None,
            remote_gid=remote_gid if mapping else None,
            local_uid=os.getuid(),
            local_gid=os.getgid(),
            force_uid=opts.uid,
            force_gid=opts.gid,
            umask=opts.umask or 0,
        )

    @property
    def identity(self) -> bool:
        """True when nothing is changed (the common case: skip the work)."""
        return (
            self.remote_uid is None
            and self.remote_gid is None
            and self.force_uid is None
            and self.force_gid is None
            and not self.umask
        )

    def shown_uid(self, uid: int) -> int:
        if self.force_uid is not None:
            return self.force_uid
        if self.remote_uid is not None and uid == self.remote_uid:
            return self.local_uid
        return uid

    def shown_gid(self, gid: int) -> int:
        if self.force_gid is not None:
            return self.force_gid
        if self.remote_gid is not None and gid == self.remote_gid:
            return self.local_gid
        return gid

    def shown_mode(self, mode: int) -> int:
        # only permission bits: the file type bits above 0o7777 are never masked
        return mode & ~(self.umask & 0o7777)

    def remote_uid_for(self, uid: int) -> int:
        """The uid a chown to local ``uid`` sends (-1, "unchanged", stays -1)."""
        if self.remote_uid is not None and uid == self.local_uid and uid != -1:
            return self.remote_uid
        return uid

    def remote_gid_for(self, gid: int) -> int:
        if self.remote_gid is not None and gid == self.local_gid and gid != -1:
            return self.remote_gid
        return gid


#: the presentation that changes nothing
IDENTITY = Ownership()
