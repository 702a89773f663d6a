"""aiokafka keyword arguments from the settings: how to reach a secured cluster.

The only place where `Settings` meets Kafka client code; `config` itself holds plain data.
"""

from __future__ import annotations

import ssl
from typing import Any

from ledger.config import Settings, secret
from ledger.errors import ConfigError

__all__ = ["security_kwargs"]


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for `settings.security_protocol` (PLAINTEXT, SSL,
    SASL_PLAINTEXT, SASL_SSL), SASL credentials, the CA file and a client certificate for
    mutual TLS; the password is read from its `SecretStr` (or its file) here and nowhere else.

    Raises `ConfigError` for a certificate, key or password file that cannot be read."""
    from aiokafka.helpers import create_ssl_context

    kwargs: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        try:
            kwargs["ssl_context"] = create_ssl_context(
                cafile=settings.ssl_cafile,
                certfile=settings.ssl_certfile,
                keyfile=settings.ssl_keyfile,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS settings: {exc}") from exc
    if settings.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = secret(
            settings.sasl_password, settings.sasl_password_file, "--sasl-password-file"
        )
    return kwargs
