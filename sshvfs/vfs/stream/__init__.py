"""Streaming an open file: read-ahead, write-behind, the mount-wide byte budget and the
order reads and stats keep with the writes before them."""
