"""The Kafka side of the pipeline: the consumer wrapper and the per-partition offset tracker."""
