"""Byte-stream channels to the server: the OpenSSH client (``openssh``) and the SFTP
codec over its pipes (``sftppipe``). The in-process asyncssh transport is
:mod:`sshvfs.ssh.connection`."""
