from ..vfs.types import Attrs, Entry

def parse(
    data: bytes, start: int, resolution: int, entry: type[Entry], attrs: type[Attrs], /
) -> tuple[list[tuple[bytes, Entry]], int] | None: ...
