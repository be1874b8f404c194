"""The benchmark: the connector against a raw-consume ceiling and a minimal consume-and-post floor."""
