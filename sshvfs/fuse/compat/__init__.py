"""Everything that leans on pyfuse3 beyond its stock, documented API, in one place and
behind one gate: what our patched build adds (:mod:`~sshvfs.fuse.compat.features`) and
the replacement of its asyncio shim's fd wait (:mod:`~sshvfs.fuse.compat.fdwait`). With
another pyfuse3 each falls back to the stock behaviour: slower, never wrong."""
