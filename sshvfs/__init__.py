"""sshvfs: mount a remote directory over SSH/SFTP as a local FUSE filesystem."""

__version__ = "0.1.0"
