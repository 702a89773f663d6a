"""Events in and out: JSON Lines files and Kafka. The only layer that imports aiokafka.

Import the submodules (`emitter`, `consumer`, `ingest`, ...).
"""

__all__: list[str] = []
