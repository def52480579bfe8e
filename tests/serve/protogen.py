"""Generates the Python code of gyre's v2 gRPC messages from their `.proto`.

`python -m tests.serve.protogen` (`make proto`) rewrites the committed files;
`test_grpc.py` compares them with a fresh generation, so they cannot drift from the proto.

One step follows protoc: the messages go into a descriptor pool of their own instead of
protobuf's default one. A v2 client (`tritonclient.grpc`) registers the same message
names (package `inference`) in the default pool, and a second registration of a name
there fails, so without this gyre and such a client could not be imported into one
process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTOCOLS = Path(__file__).resolve().parents[2] / "gyre" / "serve" / "protocols"
PROTO = "grpc_predict_v2.proto"
MODULE = "gyre.serve.protocols.grpc_predict_v2_pb2"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi")


def generate(out: Path) -> None:
    """Write the generated files of `PROTOCOLS / PROTO` into `out`."""
    with tempfile.TemporaryDirectory() as scratch:
        # In a process of its own: grpc_tools' protoc crashed (SIGSEGV) in a test process
        # that had loaded TensorFlow, whose protobuf runtime it then shares.
        done = subprocess.run(
            [
                sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOCOLS}",
                f"--python_out={scratch}", f"--pyi_out={scratch}", str(PROTOCOLS / PROTO),
            ],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(
                f"protoc failed on {PROTO} with status {done.returncode}: {done.stderr}"
            )
        code = (Path(scratch) / GENERATED[0]).read_text()
        default_pool = "_descriptor_pool.Default()"
        if code.count(default_pool) != 1:
            raise RuntimeError(f"protoc's output no longer names {default_pool} once")
        code = code.replace(default_pool, "_descriptor_pool.DescriptorPool()")
        code = code.replace("'grpc_predict_v2_pb2'", f"'{MODULE}'")
        code = code.replace(
            "# source: ",
            "# (then given a descriptor pool of its own: tests/serve/protogen.py)\n# source: ",
            1,
        )
        (out / GENERATED[0]).write_text(code)
        shutil.copyfile(Path(scratch) / GENERATED[1], out / GENERATED[1])


if __name__ == "__main__":
    generate(PROTOCOLS)
    print(f"wrote {', '.join(GENERATED)} in {PROTOCOLS}", file=sys.stderr)
