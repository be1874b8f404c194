"""altcraft-kafka-connector: Kafka profile-change events into Altcraft scenarios."""

__version__ = "0.1.0"
