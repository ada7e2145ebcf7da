"""Generated gRPC code of the qmix-edge wire protocol (sources in protos/; see scripts/gen_protos.sh)."""
