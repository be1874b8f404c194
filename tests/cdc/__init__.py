"""The CDC test bed: PostgreSQL with logical decoding + Kafka Connect with Debezium (see README.md)."""
