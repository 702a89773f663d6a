"""The wire contract: event models, Avro codec, decoders, projection columns, event builders.

Pure (pydantic, fastavro, pyarrow, numpy): no DuckDB, Kafka or click. Import the submodules.
"""

__all__: list[str] = []
