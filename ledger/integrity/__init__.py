"""Auditors: verify a ledger, sign checkpoints, build and check proofs.

Import the submodules; `proofcheck` imports nothing of the package, so an auditor can read it
alone.
"""

__all__: list[str] = []
