#!/usr/bin/env bash
# Regenerate the committed gRPC Python code from protos/ (messages, .pyi stubs, service stubs).
#
# Usage: scripts/gen_protos.sh [OUT_DIR]
#   OUT_DIR defaults to the repository's runtime/proto (what gets committed). The proto files live
#   along the Python import path (protos/qmix_edge/runtime/proto/v1/*.proto), so the generated
#   modules import each other as qmix_edge.runtime.proto.v1.* without any patching.
#   tests/runtime/test_runtime_proto_sync.py runs this into a temp dir and compares.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/runtime/proto}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mapfile -t PROTOS < <(cd "$ROOT/protos" && find qmix_edge -name '*.proto' | sort)
(cd "$ROOT/protos" && "$PY" -m grpc_tools.protoc -I . \
    --python_out="$TMP" --pyi_out="$TMP" --grpc_python_out="$TMP" "${PROTOS[@]}")
for version_dir in "$TMP"/qmix_edge/runtime/proto/*/; do
    name="$(basename "$version_dir")"
    mkdir -p "$OUT/$name"
    cp "$version_dir"/*.py "$version_dir"/*.pyi "$OUT/$name/"
    [ -f "$OUT/$name/__init__.py" ] || printf '"""Generated gRPC code for protocol %s (scripts/gen_protos.sh)."""\n' "$name" >"$OUT/$name/__init__.py"
done
echo "generated ${#PROTOS[@]} proto file(s) into $OUT"
