"""Listing (and fetching) through the SSH exec channel: the remote ``sh`` commands and their
quoting (:mod:`~sshvfs.execlist.commands`, :mod:`~sshvfs.execlist.archive`), the NUL-safe
parser and its C fast path (:mod:`~sshvfs.execlist.parser`), the long-lived remote shell
(:mod:`~sshvfs.execlist.shell`), the lister over it (:mod:`~sshvfs.execlist.lister`) and
which directories of a streaming tree listing are complete
(:mod:`~sshvfs.execlist.treestream`)."""
