"""The caching layer: CachingVFS (attributes, listings, negative entries) and its open
files, lookups that list their directory, walk detection and tree prefetch, small files'
contents in memory, and what a change reported from the server drops."""
