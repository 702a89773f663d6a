"""Transparency-log primitives: the hash chain, Merkle trees, signed checkpoint notes.

Pure (stdlib and cryptography) and imports nothing else of the package. Import the submodules.
"""

__all__: list[str] = []
