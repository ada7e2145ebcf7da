"""The device side of qmix-edge: ONNX policy, agent, coordinator, evaluation harness, gRPC stubs.

Nothing in this package may import torch (directly or through `qmix_edge.train` or
`qmix_edge.export`): it is what runs on a robot or drone with the base install only.
"""
