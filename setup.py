"""The one C extension: the fast path of the bulk-listing parser. ``optional``: without a
compiler sshvfs installs all the same and parses in Python (sshvfs.execlist.parser)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sshvfs.execlist._findrecords",
            ["sshvfs/execlist/_findrecords.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
