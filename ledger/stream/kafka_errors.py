"""Which Kafka failures end a run and which are waited out: one table, used by every client.

A consumer that reconnects forever on a fault no reconnect can cure (a codec it cannot read,
credentials the broker refuses, a topic that does not exist) looks alive and records
nothing. So every client error is classified here, once: permanent ones become a
`KafkaPermanentError` (one line naming the cause, exit code 4), the rest are retried with a
capped backoff. aiokafka's own `retriable` flag is not used: it marks group-protocol errors
such as a rebalance in progress as not retriable, though a rejoin cures them.

Costs nothing on the happy path: it runs only when a client call has already failed.
"""

from __future__ import annotations

import ssl

from ledger.errors import BrokerError

__all__ = [
    "EXIT_KAFKA",
    "EXIT_TOPIC_CHANGED",
    "KafkaPermanentError",
    "TopicChangedError",
    "classify",
    "is_permanent",
]

#: the exit code of a run stopped by a permanent Kafka error (README, "Exit codes")
EXIT_KAFKA = 4
#: the exit code of a run stopped because the topic is not the one the ledger read
EXIT_TOPIC_CHANGED = 5

#: aiokafka error class name -> what the operator should read (and do)
_PERMANENT: dict[str, str] = {
    "UnsupportedCodecError": "a batch uses a compression codec this install cannot read "
    "(reinstall agent-ledger with its dependencies: cramjam provides snappy, lz4 and zstd)",
    "AuthenticationFailedError": "the broker refused the credentials",
    "SaslAuthenticationFailed": "the broker refused the SASL credentials",
    "AuthenticationMethodNotSupported": "the broker does not offer that authentication method",
    "UnsupportedSaslMechanismError": "the broker does not offer that SASL mechanism",
    "IllegalSaslStateError": "the SASL handshake failed",
    "SecurityDisabled": "the broker has security disabled for this listener",
    "TopicAuthorizationFailedError": "not authorized for the topic",
    "GroupAuthorizationFailedError": "not authorized for the consumer group",
    "ClusterAuthorizationFailedError": "not authorized for the cluster",
    "TransactionalIdAuthorizationFailed": "not authorized for the transactional id",
    "InvalidTopicError": "the topic name is not valid in Kafka",
    "InvalidGroupIdError": "the consumer group id is not valid",
    "MessageSizeTooLargeError": "a record is larger than the broker or topic accepts",
    "RecordTooLargeError": "a record is larger than the configured limit",
    "RecordListTooLargeError": "a batch is larger than the broker accepts",
    "UnsupportedVersionError": "the broker does not support a request this client needs",
    "IncompatibleBrokerVersion": "the broker's version is not supported",
    "UnrecognizedBrokerVersion": "the broker's version is not recognized",
    "UnsupportedForMessageFormatError": "the topic's message format is too old",
    "KafkaConfigurationError": "the Kafka client configuration is invalid",
    "InvalidConfigurationError": "the broker rejected the configuration",
    "PolicyViolationError": "the broker's policy rejected the request",
}


class KafkaPermanentError(BrokerError):
    """A Kafka failure no retry can cure; `ledger consume`/`emit` stop with exit code 4."""

    exit_code = EXIT_KAFKA


class TopicChangedError(KafkaPermanentError):
    """A partition does not hold what the ledger read from it (the topic was recreated, or the
    broker lost its data): resuming at the stored offsets would skip records silently. Exit
    code 5, until the operator chooses `--reset-offsets earliest` or `stored`."""

    exit_code = EXIT_TOPIC_CHANGED


def is_permanent(exc: BaseException) -> bool:
    """Whether `exc` (an aiokafka error, or an OS/TLS error from the connection) is one that
    waiting and reconnecting cannot cure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    return any(cls.__name__ in _PERMANENT for cls in type(exc).__mro__)


def classify(exc: BaseException, where: str) -> KafkaPermanentError | None:
    """The `KafkaPermanentError` for `exc` (one line: where, what, the client's message), or
    None when it is worth retrying."""
    if not is_permanent(exc):
        return None
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = "TLS certificate verification failed (check --ssl-cafile)"
    else:
        name = next(c.__name__ for c in type(exc).__mro__ if c.__name__ in _PERMANENT)
        what = _PERMANENT[name]
    detail = str(exc).strip()
    return KafkaPermanentError(
        f"{where}: {what}" + (f" ({type(exc).__name__}: {detail})" if detail else "")
    )
