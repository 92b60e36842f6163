"""Byte-stream channels to the server and the session on top: the OpenSSH client
(:mod:`~sshvfs.transport.openssh`) and the SFTP codec over its pipes
(:mod:`~sshvfs.transport.sftppipe`), the in-process asyncssh transport and host keys
(:mod:`~sshvfs.transport.connection`), the session that reconnects
(:mod:`~sshvfs.transport.session`), TCP corking (:mod:`~sshvfs.transport.cork`)."""
