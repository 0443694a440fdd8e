#!/usr/bin/env bash
# Installs what the benchmark peers need on Debian 12 (bookworm) and builds each peer into
# bench/peers/build/. Runs as root with no standard input. A second run installs nothing,
# rewrites no file whose content is unchanged and rebuilds only a peer whose sources changed.
set -Eeuo pipefail

PEERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD_DIR=$PEERS_DIR/build
BACKPORTS_SOURCES=/etc/apt/sources.list.d/bookworm-backports.sources
GO=/usr/lib/go-1.23/bin/go
PYTHON=/usr/bin/python3
MIN_NODE_MAJOR=20

# Debian jars the Java peer compiles and runs against, all under /usr/share/java.
JAVA_JARS=(
    jetty9-server jetty9-servlet jetty9-security jetty9-http jetty9-io jetty9-util
    servlet-api HikariCP slf4j-api slf4j-simple postgresql
    jackson-databind jackson-core jackson-annotations
)

DEBIAN_PACKAGES=(
    ca-certificates curl
    golang-1.23-go golang-github-go-chi-chi-dev golang-github-jackc-pgx-v4-dev
    golang-golang-x-sync-dev
    python3 python3-venv
    openjdk-17-jdk-headless libjetty9-java libhikaricp-java libpostgresql-jdbc-java
    libjackson2-databind-java libslf4j-java
)

export DEBIAN_FRONTEND=noninteractive

step="start"
trap 'echo "setup.sh: step \"$step\" failed with exit status $?" >&2' ERR

log() {
    printf 'setup.sh: %s\n' "$*"
}

# Copies $1 to $2 only when the content differs, so that an unchanged file keeps its mtime.
sync_file() {
    if ! cmp -s "$1" "$2"; then
        install -D -m 0644 "$1" "$2"
        log "updated $2"
    fi
}

# Succeeds when the SHA-256 of the files in $2.. matches the one stored in stamp file $1.
stamp_matches() {
    local stamp=$1
    shift
    [[ -f $stamp ]] && [[ $(cat "$@" | sha256sum) == "$(cat "$stamp")" ]]
}

write_stamp() {
    local stamp=$1
    shift
    cat "$@" | sha256sum >"$stamp"
}

# Succeeds when $1 is missing or older than any file under the directories or files $2...
is_stale() {
    local target=$1
    shift
    [[ ! -e $target ]] || [[ -n $(find "$@" -newer "$target" -print -quit) ]]
}

step="check that this is Debian 12 and that we are root"
if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh must run as root: it installs Debian packages" >&2
    exit 1
fi
if ! grep -q '^VERSION_CODENAME=bookworm$' /etc/os-release; then
    echo "setup.sh supports Debian 12 (bookworm) only, found: $(grep PRETTY_NAME /etc/os-release)" >&2
    exit 1
fi

step="add bookworm-backports to apt's sources (for Go 1.23)"
apt_sources_changed=false
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat >"$BACKPORTS_SOURCES" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_sources_changed=true
    log "added $BACKPORTS_SOURCES"
fi

step="install Debian packages"
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) != "install ok installed" ]]; then
        missing+=("$package")
    fi
done
if ! command -v node >/dev/null; then
    missing+=(nodejs)
fi
if ! command -v npm >/dev/null; then
    missing+=(npm)
fi
if [[ ${#missing[@]} -gt 0 || $apt_sources_changed == true ]]; then
    log "installing ${missing[*]:-nothing new; refreshing package lists}"
    apt-get update -q
    if [[ ${#missing[@]} -gt 0 ]]; then
        apt-get install -q -y --no-install-recommends "${missing[@]}"
    fi
fi

step="check Node.js and Python versions"
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [[ $node_major -lt $MIN_NODE_MAJOR ]]; then
    echo "the Node.js peer needs Node.js $MIN_NODE_MAJOR or newer, found $(node --version)" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "the Python peer needs Python 3.11 at $PYTHON, found $("$PYTHON" --version)" >&2
    exit 1
fi

step="build the Go peer"
# GOPATH mode, because Debian ships Go libraries as source under /usr/share/gocode and no
# module proxy is reachable. chi v5 sits at github.com/go-chi/chi there, and the import
# path .../chi/v5 resolves only through GOPATH mode's minimal module compatibility.
go_src=$BUILD_DIR/go/gopath/src/gopeer
for file in "$PEERS_DIR"/go/*.go "$PEERS_DIR"/go/go.mod; do
    sync_file "$file" "$go_src/$(basename "$file")"
done
if is_stale "$BUILD_DIR/go/gopeer" "$go_src"; then
    log "building $BUILD_DIR/go/gopeer"
    (
        cd "$go_src"
        GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local GOFLAGS='' \
            GOPATH="$BUILD_DIR/go/gopath:/usr/share/gocode" GOCACHE="$BUILD_DIR/go/cache" \
            "$GO" build -o "$BUILD_DIR/go/gopeer" .
    )
fi

step="build the Node.js peer (npm ci)"
node_dir=$BUILD_DIR/node
for file in "$PEERS_DIR"/node/*.js "$PEERS_DIR"/node/package.json "$PEERS_DIR"/node/package-lock.json; do
    sync_file "$file" "$node_dir/$(basename "$file")"
done
if [[ ! -d $node_dir/node_modules ]] || ! stamp_matches "$node_dir/.lock.sha256" "$node_dir/package-lock.json"; then
    log "installing npm packages into $node_dir/node_modules"
    (cd "$node_dir" && npm ci --omit=dev --no-audit --no-fund)
    write_stamp "$node_dir/.lock.sha256" "$node_dir/package-lock.json"
fi

step="build the Python peer (virtualenv and pip install)"
python_dir=$BUILD_DIR/python
for file in "$PEERS_DIR"/python/*.py "$PEERS_DIR"/python/requirements.txt; do
    sync_file "$file" "$python_dir/$(basename "$file")"
done
if [[ ! -x $python_dir/venv/bin/python ]]; then
    log "creating the virtualenv $python_dir/venv"
    "$PYTHON" -m venv "$python_dir/venv"
fi
if ! stamp_matches "$python_dir/.requirements.sha256" "$python_dir/requirements.txt"; then
    log "installing PyPI packages into $python_dir/venv"
    "$python_dir/venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
        --require-virtualenv -r "$python_dir/requirements.txt"
    write_stamp "$python_dir/.requirements.sha256" "$python_dir/requirements.txt"
fi

step="build the Java peer (javac and jar)"
java_dir=$BUILD_DIR/java
classpath=()
for jar in "${JAVA_JARS[@]}"; do
    if [[ ! -f /usr/share/java/$jar.jar ]]; then
        echo "missing /usr/share/java/$jar.jar: its Debian package did not install it" >&2
        exit 1
    fi
    classpath+=("/usr/share/java/$jar.jar")
done
if is_stale "$java_dir/java-peer.jar" "$PEERS_DIR/java" "$PEERS_DIR/setup.sh"; then
    log "building $java_dir/java-peer.jar"
    rm -rf "$java_dir/classes"
    mkdir -p "$java_dir/classes"
    find "$PEERS_DIR/java" -name '*.java' -print0 \
        | xargs -0 javac --release 17 -Xlint:all -Werror -encoding UTF-8 \
            -cp "$(IFS=:; echo "${classpath[*]}")" -d "$java_dir/classes"
    cp -r "$PEERS_DIR/java/resources/." "$java_dir/classes/"
    # The manifest's Class-Path takes space-separated URLs, so the absolute jar paths
    # resolve to the Debian jars wherever the peer's jar is.
    {
        echo "Main-Class: peregrine.peer.Main"
        echo "Class-Path: ${classpath[*]}" | fold -w 70 | sed '2,$s/^/ /'
    } >"$java_dir/manifest.txt"
    jar --create --file "$java_dir/java-peer.jar" --manifest "$java_dir/manifest.txt" \
        -C "$java_dir/classes" .
fi

step="done"
log "peers are built in $BUILD_DIR"
