"""A local Allen API server (loopback HTTP, real formats, fault injection) for tests and
offline work."""
