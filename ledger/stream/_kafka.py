"""aiokafka keyword arguments from the settings: how to reach a secured cluster.

The only place where `Settings` meets Kafka client code; `config` itself holds plain data.
"""

from __future__ import annotations

import ssl
from typing import Any

from ledger.config import Settings

__all__ = ["security_kwargs"]


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for `settings.security_protocol` (PLAINTEXT, SSL,
    SASL_PLAINTEXT, SASL_SSL), SASL credentials and the CA file; the password is read from
    its `SecretStr` here and nowhere else."""
    from aiokafka.helpers import create_ssl_context

    kwargs: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = (
            create_ssl_context(cafile=settings.ssl_cafile)
            if settings.ssl_cafile
            else ssl.create_default_context()
        )
    if settings.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return kwargs
