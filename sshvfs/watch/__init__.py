"""Changes made on the server, pushed into the caches: the watcher (scope, inotify driver,
polls: :mod:`~sshvfs.watch.watcher`) and its remote commands and parsers
(:mod:`~sshvfs.watch.remote`)."""
