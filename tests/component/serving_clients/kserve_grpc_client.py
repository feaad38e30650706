"""Run inside a venv with `kserve` installed: talk to an OIP gRPC server with KServe's own gRPC client.

Usage: python kserve_grpc_client.py HOST:PORT MODEL INPUT_NAME OUTPUT_NAME NPY_IN
Prints one JSON line: readiness flags; for typed contents and raw contents the output shape, data and
id; and the status code and details of a request with a wrong datatype.
"""

import asyncio
import json
import sys

import grpc
import numpy as np
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput


async def main(target: str, model: str, input_name: str, output_name: str, npy: str) -> dict:
    x = np.load(npy)
    client = InferenceGRPCClient(target, timeout=30, retries=0)
    report: dict = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(model),
    }
    for binary in (False, True):  # False: typed contents (fp32_contents); True: raw_input_contents
        tensor = InferInput(name=input_name, shape=list(x.shape), datatype="FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        request = InferRequest(
            model_name=model,
            infer_inputs=[tensor],
            request_id=f"kserve-grpc-{binary}",
            request_outputs=[RequestedOutput(name=output_name)],
        )
        response = await client.infer(request)
        output = response.outputs[0].as_numpy()
        report["raw" if binary else "typed"] = {
            "id": response.id,
            "shape": list(output.shape),
            "data": output.ravel().tolist(),
        }
    wrong = InferInput(name=input_name, shape=list(x.shape), datatype="FP64")
    wrong.set_data_from_numpy(x.astype(np.float64), binary_data=True)
    try:
        await client.infer(InferRequest(model_name=model, infer_inputs=[wrong]))
        report["error"] = None
    except grpc.RpcError as exc:
        report["error"] = {"code": str(exc.code()), "details": exc.details()}
    await client.close()
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:6]))))
