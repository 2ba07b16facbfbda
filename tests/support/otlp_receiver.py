"""An OTLP gRPC receiver that is not ours: the OpenTelemetry project's Python protobuf types
(PyPI `opentelemetry-proto`) decoded by Google's protobuf runtime, served by `grpcio`.

tests/behaviour/independent_receiver.rs starts it, points a gateway at it, and compares what
it decoded with what the gateway's own in-test receiver (Rust, prost) decoded from the same
events. Both sides reduce a span or log record to the same canonical JSON object
(`canonical_span`, `canonical_log` here; `span_json`, `log_json` there), so any field one
decoder reads differently from the other shows up as a difference.

    python otlp_receiver.py OUT.jsonl

Prints the port it listens on (127.0.0.1) as its first line of output, then writes one JSON
object per span, log record or resource to OUT.jsonl as requests arrive, and exits when its
standard input closes.
"""

import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def value(v):
    """An AnyValue as {type: value}; bytes as hex, arrays and maps recursively."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return {"s": v.string_value}
    if kind == "int_value":
        return {"i": v.int_value}
    if kind == "double_value":
        return {"d": v.double_value}
    if kind == "bool_value":
        return {"b": v.bool_value}
    if kind == "bytes_value":
        return {"bytes": v.bytes_value.hex()}
    if kind == "array_value":
        return {"a": [value(x) for x in v.array_value.values]}
    if kind == "kvlist_value":
        return {"kv": attributes(v.kvlist_value.values)}
    if kind == "string_value_strindex":
        return {"strindex": v.string_value_strindex}
    raise ValueError(f"unknown AnyValue kind {kind}")


def attributes(kvs):
    out = {}
    for kv in kvs:
        if kv.key in out:
            raise ValueError(f"attribute {kv.key} twice")
        out[kv.key] = value(kv.value)
    return out


def canonical_span(s):
    return {
        "signal": "span",
        "trace_id": s.trace_id.hex(),
        "span_id": s.span_id.hex(),
        "parent_span_id": s.parent_span_id.hex(),
        "trace_state": s.trace_state,
        "flags": s.flags,
        "name": s.name,
        "kind": s.kind,
        "start": s.start_time_unix_nano,
        "end": s.end_time_unix_nano,
        "attributes": attributes(s.attributes),
        "dropped_attributes": s.dropped_attributes_count,
        "events": [
            {
                "name": e.name,
                "time": e.time_unix_nano,
                "attributes": attributes(e.attributes),
                "dropped_attributes": e.dropped_attributes_count,
            }
            for e in s.events
        ],
        "dropped_events": s.dropped_events_count,
        "links": len(s.links),
        "status": [s.status.code, s.status.message],
    }


def canonical_log(r):
    # observed_time_unix_nano is the time of export, different in every run: left out.
    return {
        "signal": "log",
        "time": r.time_unix_nano,
        "severity_number": r.severity_number,
        "severity_text": r.severity_text,
        "body": value(r.body) if r.HasField("body") else None,
        "attributes": attributes(r.attributes),
        "dropped_attributes": r.dropped_attributes_count,
        "flags": r.flags,
        "trace_id": r.trace_id.hex(),
        "span_id": r.span_id.hex(),
        "event_name": r.event_name,
    }


def canonical_resource(signal, resource, scope):
    return {
        "signal": "resource",
        "of": signal,
        "resource": attributes(resource.attributes),
        "scope": [scope.name, scope.version],
    }


class Out:
    def __init__(self, path):
        self.file = open(path, "w", encoding="utf-8")
        self.lock = threading.Lock()

    def write(self, objects):
        with self.lock:
            for o in objects:
                self.file.write(json.dumps(o, sort_keys=True) + "\n")
            self.file.flush()


def canonical_request(signal, resources, scopes_of, items_of, canonical):
    """Every item of an export request, each group behind its resource and scope."""
    objects = []
    for r in resources:
        for scoped in scopes_of(r):
            objects.append(canonical_resource(signal, r.resource, scoped.scope))
            objects.extend(canonical(item) for item in items_of(scoped))
    return objects


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out):
        self.out = out

    def Export(self, request, context):
        self.out.write(
            canonical_request(
                "span",
                request.resource_spans,
                lambda r: r.scope_spans,
                lambda s: s.spans,
                canonical_span,
            )
        )
        return trace_service_pb2.ExportTraceServiceResponse()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out):
        self.out = out

    def Export(self, request, context):
        self.out.write(
            canonical_request(
                "log",
                request.resource_logs,
                lambda r: r.scope_logs,
                lambda s: s.log_records,
                canonical_log,
            )
        )
        return logs_service_pb2.ExportLogsServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    """Accepted and not compared: metrics are the SDK's encoding, not ours."""

    def Export(self, request, context):
        return metrics_service_pb2.ExportMetricsServiceResponse()


def main():
    out = Out(sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(out), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(out), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the test closes our standard input
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
