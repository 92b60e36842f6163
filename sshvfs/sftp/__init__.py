"""The VFS over SFTP: :class:`~sshvfs.sftp.vfs.SftpVFS`, its open files
(:mod:`sshvfs.sftp.file`) and their mount-wide streaming state (:mod:`sshvfs.sftp.streaming`).
Builds on :mod:`sshvfs.vfs` (the Protocol, caches, streams) and the transports; nothing in
:mod:`sshvfs.vfs` imports it."""
