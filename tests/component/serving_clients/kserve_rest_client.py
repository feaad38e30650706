"""Run inside a venv with `kserve` installed: talk to an OIP server with KServe's own REST client.

Usage: python kserve_rest_client.py BASE_URL MODEL INPUT_NAME OUTPUT_NAME NPY_IN
Prints one JSON line: readiness flags, and for JSON and binary requests the output shape, data and id.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput


async def main(base_url: str, model: str, input_name: str, output_name: str, npy: str) -> dict:
    x = np.load(npy)
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    report: dict = {
        "live": await client.is_server_live(base_url),
        "ready": await client.is_server_ready(base_url),
        "model_ready": await client.is_model_ready(base_url, model),
    }
    for binary in (False, True):
        tensor = InferInput(name=input_name, shape=list(x.shape), datatype="FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        request = InferRequest(
            model_name=model,
            infer_inputs=[tensor],
            request_id=f"kserve-{binary}",
            request_outputs=[RequestedOutput(name=output_name, parameters={"binary_data": binary})],
        )
        response = await client.infer(base_url, request, model_name=model)
        output = response.outputs[0].as_numpy()
        report["binary" if binary else "json"] = {
            "id": response.id,
            "shape": list(output.shape),
            "data": output.ravel().tolist(),
        }
    await client.close()
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:6]))))
