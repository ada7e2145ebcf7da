"""Generated gRPC code for protocol v1 (scripts/gen_protos.sh)."""
