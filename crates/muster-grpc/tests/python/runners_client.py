"""A foreign gRPC client of muster: Python's grpcio with stubs generated from proto/ now, by
grpcio-tools, against a real coordinator. Drives RegisterRunner -> CreateWorkload ->
UpdateWorkloadStatus -> ListWorkloadsByThread -> DeleteRunner on RunnersService, reads through
RunnersGateway, and checks the gateway does not answer what it does not expose.

Environment: MUSTER_GRPC_TARGET (host:port), MUSTER_OPERATOR_TOKEN, MUSTER_PROTO_DIR.
Prints one `ok: ...` line per step; any failure raises (non-zero exit).
"""

import hashlib
import importlib
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

TARGET = os.environ["MUSTER_GRPC_TARGET"]
TOKEN = os.environ["MUSTER_OPERATOR_TOKEN"]
PROTO_DIR = os.environ["MUSTER_PROTO_DIR"]


def generate(out_dir):
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for proto in ("muster/runners/v1/runners.proto", "muster/gateway/v1/runners.proto"):
        code = protoc.main([
            "grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", proto,
        ])
        if code != 0:
            raise SystemExit(f"protoc failed on {proto} with {code}")
    for package in ("muster", "muster/runners", "muster/runners/v1", "muster/gateway", "muster/gateway/v1"):
        open(os.path.join(out_dir, package, "__init__.py"), "a").close()
    sys.path.insert(0, out_dir)


def check(condition, what, seen):
    if not condition:
        raise AssertionError(f"expected {what}; saw {seen}")


def main():
    with tempfile.TemporaryDirectory() as out_dir:
        generate(out_dir)
        pb = importlib.import_module("muster.runners.v1.runners_pb2")
        rpc = importlib.import_module("muster.runners.v1.runners_pb2_grpc")
        gateway_rpc = importlib.import_module("muster.gateway.v1.runners_pb2_grpc")
        metadata = [("authorization", f"Bearer {TOKEN}")]
        with grpc.insecure_channel(TARGET) as channel:
            runners = rpc.RunnersServiceStub(channel)
            gateway = gateway_rpc.RunnersGatewayStub(channel)

            registered = runners.RegisterRunner(pb.RegisterRunnerRequest(name="python-runner"), metadata=metadata)
            runner_id = registered.runner.meta.id
            check(registered.service_token.startswith("muster_runner_"), "a runner token", registered.service_token[:14])
            check(registered.runner.status == pb.RUNNER_STATUS_OFFLINE, "a runner not heard from yet", registered.runner.status)
            validated = runners.ValidateServiceToken(pb.ValidateServiceTokenRequest(
                token_hash=hashlib.sha256(registered.service_token.encode()).hexdigest()), metadata=metadata)
            check(validated.runner.meta.id == runner_id, "the token's runner", validated.runner.meta.id)
            print(f"ok: RegisterRunner {runner_id}; ValidateServiceToken finds it by the token's hash")

            created = runners.CreateWorkload(pb.CreateWorkloadRequest(
                id="py-wl-1", runner_id=runner_id, thread_id="py-thread", agent_id="py-agent",
                status=pb.WORKLOAD_STATUS_STARTING,
                containers=[pb.Container(container_id="c1", name="main", role=pb.CONTAINER_ROLE_MAIN,
                                         image="agent:1", status=pb.CONTAINER_STATUS_WAITING)],
            ), metadata=metadata)
            check(created.workload.meta.id == "py-wl-1", "the workload", created.workload)
            check(created.workload.organization_id == "default", "the default organization", created.workload.organization_id)
            print("ok: CreateWorkload py-wl-1")

            updated = runners.UpdateWorkloadStatus(pb.UpdateWorkloadStatusRequest(
                id="py-wl-1", status=pb.WORKLOAD_STATUS_RUNNING,
                containers=[pb.Container(container_id="c1", name="main", role=pb.CONTAINER_ROLE_MAIN,
                                         image="agent:1", status=pb.CONTAINER_STATUS_RUNNING)],
            ), metadata=metadata)
            check(updated.workload.status == pb.WORKLOAD_STATUS_RUNNING, "running", updated.workload.status)
            try:
                runners.UpdateWorkloadStatus(pb.UpdateWorkloadStatusRequest(
                    id="py-wl-1", status=pb.WORKLOAD_STATUS_STARTING), metadata=metadata)
                raise AssertionError("a status moving backwards was taken")
            except grpc.RpcError as error:
                check(error.code() == grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION", error.code())
                codes = dict(error.trailing_metadata() or ())
                check(codes.get("muster-error-code") == "invalid_state", "muster-error-code invalid_state", codes)
            print("ok: UpdateWorkloadStatus to RUNNING; back to STARTING refused FAILED_PRECONDITION")

            listed = runners.ListWorkloadsByThread(pb.ListWorkloadsByThreadRequest(thread_id="py-thread"), metadata=metadata)
            check([w.meta.id for w in listed.workloads] == ["py-wl-1"], "the thread's workload", listed)
            print("ok: ListWorkloadsByThread py-thread")

            through_gateway = gateway.GetWorkload(pb.GetWorkloadRequest(id="py-wl-1"), metadata=metadata)
            check(through_gateway.workload.status == pb.WORKLOAD_STATUS_RUNNING, "the gateway's read", through_gateway)
            gateway_list = gateway.ListWorkloadsByThread(pb.ListWorkloadsByThreadRequest(thread_id="py-thread"), metadata=metadata)
            check(len(gateway_list.workloads) == 1, "the gateway's list", gateway_list)
            # What the gateway does not expose: the internal service's CreateWorkload on the
            # gateway's name.
            hidden = channel.unary_unary(
                "/muster.gateway.v1.RunnersGateway/CreateWorkload",
                request_serializer=pb.CreateWorkloadRequest.SerializeToString,
                response_deserializer=pb.CreateWorkloadResponse.FromString,
            )
            try:
                hidden(pb.CreateWorkloadRequest(id="py-wl-2", runner_id=runner_id,
                                                status=pb.WORKLOAD_STATUS_STARTING), metadata=metadata)
                raise AssertionError("the gateway answered CreateWorkload")
            except grpc.RpcError as error:
                check(error.code() == grpc.StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED", error.code())
            print("ok: RunnersGateway reads; its CreateWorkload is UNIMPLEMENTED")

            try:
                runners.GetRunner(pb.GetRunnerRequest(id=runner_id))
                raise AssertionError("a call without a token was answered")
            except grpc.RpcError as error:
                check(error.code() == grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", error.code())

            runners.DeleteRunner(pb.DeleteRunnerRequest(id=runner_id), metadata=metadata)
            orphaned = runners.GetWorkload(pb.GetWorkloadRequest(id="py-wl-1"), metadata=metadata)
            check(orphaned.workload.status == pb.WORKLOAD_STATUS_FAILED, "FAILED after DeleteRunner", orphaned.workload.status)
            check(orphaned.workload.status_reason == "runner_deleted", "runner_deleted", orphaned.workload.status_reason)
            try:
                runners.GetRunner(pb.GetRunnerRequest(id=runner_id), metadata=metadata)
                raise AssertionError("a deleted runner was found")
            except grpc.RpcError as error:
                check(error.code() == grpc.StatusCode.NOT_FOUND, "NOT_FOUND", error.code())
            print("ok: DeleteRunner; its workload FAILED runner_deleted; the runner is NOT_FOUND")
    print("ok: the Python gRPC client round trip passed")


if __name__ == "__main__":
    main()
