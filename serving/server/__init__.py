"""The ONNX Runtime model server: Open Inference Protocol v2 over HTTP, dynamic batching, metrics.

Layers, outermost first: `app` (aiohttp transport) → `codec` (OIP JSON/binary ⇄ numpy, pure) →
`batching` (queue, merge/split) → `runtime` (ONNX Runtime session). `artifacts` reads and verifies the
manifest; `metrics` and `power` own the Prometheus collectors on an explicit registry.
"""
