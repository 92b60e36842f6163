"""The application: the command line, one mount's life, the ``mount.sshvfs`` helper, the
demo (and its embedded SSH server), the status display."""
