#!/usr/bin/env bash
# Fetch the jars of the Apache Kafka 4.1.1 test broker (KRaft, single node) into a cache folder.
#
#   .ci/install-kafka.sh            # -> <repo>/.cache/kafka-4.1.1/libs
#   KAFKA_LIBS_DIR=/some/dir .ci/install-kafka.sh
#
# Idempotent: a marker file is written after a successful copy and the fetch is skipped when it exists.
# Needs a JDK (17+) and Maven. tests/broker/kafka.py reads the same folder (and the same KAFKA_LIBS_DIR)
# and runs this same fetch on demand when the cache is missing, so calling this script is optional; CI
# calls it to fail early (and cache ~/.m2 and .cache/).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
libs="${KAFKA_LIBS_DIR:-$repo/.cache/kafka-4.1.1/libs}"
marker="$libs/.complete"

if [[ -f "$marker" ]]; then
    echo "kafka jars already in $libs"
    exit 0
fi

command -v java >/dev/null || { echo "install-kafka: java not found (need JDK 17+)" >&2; exit 1; }
command -v mvn >/dev/null || { echo "install-kafka: mvn not found" >&2; exit 1; }

mkdir -p "$libs"
mvn -q -B -Dstyle.color=never -f "$repo/tests/broker/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime
# Keep this content in sync with MARKER_TEXT in tests/broker/kafka.py.
echo "kafka_2.13:4.1.1" > "$marker"
echo "kafka jars in $libs ($(ls "$libs"/*.jar | wc -l) jars)"
