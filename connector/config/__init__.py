"""Typed, frozen, self-validating settings.

Sources, later ones winning:

1. the YAML file given with ``--config``;
2. environment variables named ``ALTCRAFT_CONNECTOR__<PATH>``, where ``<PATH>`` is the key path in
   upper case with ``__`` between levels: ``ALTCRAFT_CONNECTOR__BATCHING__LINGER_S=0.5``.
   List items are addressed by index (``ALTCRAFT_CONNECTOR__ROUTES__0__WORKFLOW_ID=12``). Inside the
   librdkafka pass-through maps (``kafka.common``, ``kafka.consumer``, ``kafka.producer``) a single
   ``_`` becomes ``.``: ``ALTCRAFT_CONNECTOR__KAFKA__COMMON__SECURITY_PROTOCOL=SASL_SSL``.
   Values are parsed as YAML scalars, so ``true``, ``12`` and ``0.5`` get their natural types.

Secrets (the Altcraft token, the Kafka SASL password, the Schema Registry credentials) may be given
inline, through the environment as above, or as a ``*_file`` key naming a mounted file. They are held
as :class:`pydantic.SecretStr` and never appear in ``repr``, logs, problems or :func:`masked_dump`;
credentials inside URLs (``http://user:pw@host``, ``?token=...``) are masked there too.

Validation happens once, before anything runs, and reports every problem of a file in one pass:

- YAML syntax errors and duplicate keys, with file, line and key path (never the line's content);
- wrong types and ranges of every field, even when another field of the same section is wrong too: the
  checks that span fields are field validators reading the fields declared before them
  (``ValidationInfo.data``), so they run whenever the fields they need are valid, and the checks that
  span sections (:mod:`connector.config.checks`) run on whatever the raw data holds that is valid;
- files the settings name (secrets, CA bundles, Avro reader schemas) that are missing, unreadable or
  not what they should be.

Scalars are taken as a careful reader of the file means them: a number given for a text setting is
that text as written (``group_id: 0012`` is ``"0012"``), a numeric string for a number setting is
that number, and ``true``/``false`` are never numbers.

This package is the only place that reads the environment (:func:`load_settings`, in
:mod:`connector.config.loading`); every other module gets its settings from here.

The modules, one job each, lower ones first (each imports only those above it):

- :mod:`~connector.config.masking`: what never shows, secrets by key name and credentials in URLs;
- :mod:`~connector.config.fields`: one field's raw value, as meant and checked on its own;
- :mod:`~connector.config.sections`: the settings of each section, and the enums they use;
- :mod:`~connector.config.checks`: the checks spanning sections;
- :mod:`~connector.config.settings`: the root :class:`Settings`, :func:`masked_dump`,
  :func:`kafka_common_props`;
- :mod:`~connector.config.loading`: :func:`load_settings` (YAML file, environment, secret files).
"""

from __future__ import annotations

from connector.config.fields import TopicName
from connector.config.loading import ENV_PREFIX, PASSTHROUGH_MAPS, SettingsError, load_settings
from connector.config.masking import MASK, mask_url_credentials
from connector.config.sections import (
    AVRO_FORMATS,
    AltcraftSettings,
    BatchingSettings,
    DeadLetterSettings,
    Format,
    KafkaSettings,
    LibrdkafkaValue,
    Matching,
    Mode,
    ObservabilitySettings,
    OpAction,
    OpsSettings,
    Otherwise,
    RetrySettings,
    RouteSettings,
    SchemaRegistrySettings,
    ShutdownSettings,
    TaskSettings,
)
from connector.config.settings import Settings, kafka_common_props, masked_dump

__all__ = [
    "AVRO_FORMATS",
    "ENV_PREFIX",
    "MASK",
    "PASSTHROUGH_MAPS",
    "AltcraftSettings",
    "BatchingSettings",
    "DeadLetterSettings",
    "Format",
    "KafkaSettings",
    "LibrdkafkaValue",
    "Matching",
    "Mode",
    "ObservabilitySettings",
    "OpAction",
    "OpsSettings",
    "Otherwise",
    "RetrySettings",
    "RouteSettings",
    "SchemaRegistrySettings",
    "Settings",
    "SettingsError",
    "ShutdownSettings",
    "TaskSettings",
    "TopicName",
    "kafka_common_props",
    "load_settings",
    "mask_url_credentials",
    "masked_dump",
]
