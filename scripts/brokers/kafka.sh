#!/usr/bin/env bash
# Fetch the Apache Kafka broker (the kafka_2.13 jar and its runtime dependencies) from Maven
# Central and print the directory holding the jars. The message-queue trigger tests start a
# single KRaft broker+controller from it (java -cp 'DIR/*' kafka.Kafka server.properties).
# Cached in ~/.cache/fission-rs/kafka/<version>; a miss downloads (~1 minute), a hit is instant.
set -euo pipefail
VERSION="${KAFKA_VERSION:-4.1.1}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/fission-rs/kafka/$VERSION"
if [[ -f "$CACHE/.complete" ]]; then
  echo "$CACHE"
  exit 0
fi
# Test binaries running in parallel may all ask at once: one fetches, the others wait for it.
mkdir -p "$(dirname "$CACHE")"
exec 9>"$CACHE.lock"
flock 9
if [[ -f "$CACHE/.complete" ]]; then
  echo "$CACHE"
  exit 0
fi
command -v java >/dev/null || { echo "kafka.sh: java (17+) is required" >&2; exit 1; }
command -v mvn >/dev/null || { echo "kafka.sh: mvn is required" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>fission-rs</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- The broker (kafka.Kafka) and the storage tool (kafka.tools.StorageTool). -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version></dependency>
    <!-- Its log4j2 binding, so the broker logs to stdout rather than failing to find one. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
rm -rf "$CACHE.tmp"
mkdir -p "$CACHE.tmp"
mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$CACHE.tmp" >&2
# Whole or nothing: a half-fetched directory is never taken for a cache hit.
rm -rf "$CACHE"
mv "$CACHE.tmp" "$CACHE"
touch "$CACHE/.complete"
echo "$CACHE"
