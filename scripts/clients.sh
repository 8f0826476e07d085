#!/usr/bin/env bash
# Installs the client matrix the interop tests drive (tests/interop_*.rs) into the git-ignored
# .clients-cache/ (or $SKALD_CLIENTS_CACHE), from the project's own pinned files:
#
#   java/client.classpath  Apache Kafka's Java client (tests/clients/java/pom.xml) and the check
#                          programs tests/clients/java/src/*.java compiled against it
#   java/tools.classpath   Apache Kafka's command-line tools (tests/clients/java/tools/pom.xml)
#   go/bin/franz, sarama   the Go check programs (tests/clients/go: franz-go and IBM/sarama,
#                          pinned in its go.mod / go.sum)
#   js/                    kafkajs and @confluentinc/kafka-javascript
#                          (tests/clients/js/package-lock.json) with the check programs copied
#                          beside its node_modules, where Node resolves them
#   python/                aiokafka and confluent-kafka (tests/clients/python/requirements.txt,
#                          every dependency pinned), for PYTHONPATH
#
# Each part is redone only when its inputs (pinned versions, sources, this script) changed: a
# stamp file holds their hash. Maven downloads go to .clients-cache/m2, Go's module and build
# caches to .clients-cache/go, npm's to .clients-cache/npm, pip's to .clients-cache/pip.
# scripts/test runs this before the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${SKALD_CLIENTS_CACHE:-$PWD/.clients-cache}"
MAVEN_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.11.0

mkdir -p "$CACHE"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# up_to_date NAME FILE...: whether NAME was last built from exactly these files (and this script).
up_to_date() {
    local name=$1
    shift
    local hash
    hash=$(cat "$@" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
    [ "$(cat "$CACHE/$name.stamp" 2>/dev/null)" = "$hash" ] && return 0
    echo "$hash" >"$CACHE/$name.stamp.new"
    return 1
}

# built NAME: records the build of NAME as done (the stamp up_to_date prepared).
built() {
    mv "$CACHE/$1.stamp.new" "$CACHE/$1.stamp"
}

# maven_jars POM DIR: the POM's runtime dependencies, copied into DIR afresh. Maven's output is
# shown only when it fails.
maven_jars() {
    rm -rf "$2"
    if ! mvn -B -q -f "$1" -Dmaven.repo.local="$CACHE/m2" \
        "$MAVEN_DEPENDENCY_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$2" >"$CACHE/mvn.log" 2>&1; then
        cat "$CACHE/mvn.log" >&2
        return 1
    fi
}

# jars DIR: the jars in DIR, ':'-separated.
jars() {
    local entries=("$1"/*.jar)
    (IFS=:; echo "${entries[*]}")
}

java_client() {
    local src=tests/clients/java
    if up_to_date java-client "$src/pom.xml" "$src"/src/*.java; then
        return
    fi
    echo "scripts/clients.sh: Java client (Maven Central) and its check programs" >&2
    maven_jars "$src/pom.xml" "$CACHE/java/client-lib"
    rm -rf "$CACHE/java/classes"
    javac -Xlint:all -Werror -d "$CACHE/java/classes" \
        -cp "$(jars "$CACHE/java/client-lib")" "$src"/src/*.java
    echo "$CACHE/java/classes:$(jars "$CACHE/java/client-lib")" >"$CACHE/java/client.classpath"
    built java-client
}

java_tools() {
    local pom=tests/clients/java/tools/pom.xml
    if up_to_date java-tools "$pom"; then
        return
    fi
    echo "scripts/clients.sh: Kafka's command-line tools (Maven Central)" >&2
    maven_jars "$pom" "$CACHE/java/tools-lib"
    jars "$CACHE/java/tools-lib" >"$CACHE/java/tools.classpath"
    built java-tools
}

go_clients() {
    local src=tests/clients/go
    if up_to_date go "$src/go.mod" "$src/go.sum" "$src"/*/*.go; then
        return
    fi
    echo "scripts/clients.sh: Go clients (Go module proxy) and their check programs" >&2
    (
        cd "$src"
        export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-modcacherw
        go build -o "$CACHE/go/bin/" ./...
    )
    built go
}

js_clients() {
    local src=tests/clients/js
    if up_to_date js "$src/package.json" "$src/package-lock.json" "$src"/*.js; then
        return
    fi
    echo "scripts/clients.sh: JavaScript clients (npm)" >&2
    # @confluentinc/kafka-javascript has no prebuilt binary on npm: its install downloads one
    # from GitHub or, failing that, builds its bundled librdkafka, by default with compression
    # libraries it downloads from their own sites. Linked "dynamically" it configures librdkafka
    # with the system's instead (Debian's; OpenSSL's headers come with the machine).
    if ! { command -v pkg-config >/dev/null && pkg-config --exists zlib libzstd liblz4; }; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config \
            zlib1g-dev libzstd-dev liblz4-dev >/dev/null
    fi
    mkdir -p "$CACHE/js"
    cp "$src/package.json" "$src/package-lock.json" "$src"/*.js "$CACHE/js/"
    (cd "$CACHE/js" && CKJS_LINKING=dynamic \
        npm ci --no-audit --no-fund --loglevel=error --cache "$CACHE/npm")
    built js
}

python_clients() {
    local requirements=tests/clients/python/requirements.txt
    if up_to_date python "$requirements"; then
        return
    fi
    echo "scripts/clients.sh: Python clients (PyPI)" >&2
    rm -rf "$CACHE/python"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
        --no-deps --target "$CACHE/python" --cache-dir "$CACHE/pip" -r "$requirements"
    built python
}

java_client
java_tools
go_clients
js_clients
python_clients
