//! OTLP export requests as bytes: encoded once, sent unchanged.
//!
//! The disk spool (issue 16) stores an export request as the bytes an exporter would send, so a
//! replay after a restart sends exactly what would have been sent; the encode-once path (issue
//! 17) builds those bytes straight from the envelope (`export::encode`) and sends them without an
//! SDK exporter. This module is the sending seam: [`WireSender`] sends any encoded request
//! unchanged, over gRPC through a pass-through codec on the signal's service method, or over HTTP
//! as the body of a `POST` to `/v1/traces` or `/v1/logs`. [`encode_spans`] builds the request the
//! SDK's exporter would build for span values (a custom sink's batch, spooled); `encode_logs`
//! does the same for log records and exists for the tests that hold the gateway's own encoding
//! equal to the SDK's.
//!
//! Errors keep the SDK exporter's classification (`SinkError`): a malformed-data answer (gRPC
//! `INVALID_ARGUMENT`, HTTP 400) is a rejection, never retried; anything else is a failure the caller may
//! hold and retry.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::sink::SinkError;

/// Which OTLP service an encoded request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireSignal {
    /// `ExportTraceServiceRequest`.
    Traces,
    /// `ExportLogsServiceRequest`.
    Logs,
}

impl WireSignal {
    /// The HTTP path the request is posted to.
    pub fn http_path(self) -> &'static str {
        match self {
            WireSignal::Traces => "/v1/traces",
            WireSignal::Logs => "/v1/logs",
        }
    }

    /// The gRPC method the request is sent to.
    pub fn grpc_path(self) -> &'static str {
        match self {
            WireSignal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            WireSignal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }
}

/// The `ExportTraceServiceRequest` for `spans` under `resource`, encoded (OTLP protobuf): the
/// same message the SDK's OTLP exporter builds for them.
pub fn encode_spans(spans: &[SpanData], resource: &Resource) -> Vec<u8> {
    let resource = ResourceAttributesWithSchema::from(resource);
    let request = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans.to_vec(), &resource),
    };
    request.encode_to_vec()
}

/// The `ExportLogsServiceRequest` for `records` under `resource`, encoded (OTLP protobuf): the
/// same message the SDK's OTLP log exporter builds for them. Tests compare the gateway's own
/// encoding with it.
#[cfg(any(test, feature = "testing"))]
pub fn encode_logs(
    records: &[(
        &opentelemetry_sdk::logs::SdkLogRecord,
        &opentelemetry::InstrumentationScope,
    )],
    resource: &Resource,
) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope;
    use opentelemetry_sdk::logs::LogBatch;

    let resource = ResourceAttributesWithSchema::from(resource);
    let batch = LogBatch::new(records);
    let request = ExportLogsServiceRequest {
        resource_logs: group_logs_by_resource_and_scope(&batch, &resource),
    };
    request.encode_to_vec()
}

/// A codec that sends the given bytes as the message and returns the answer's bytes as they
/// came: the request is already encoded, and only the status of the answer matters.
#[derive(Debug, Clone, Copy, Default)]
struct PassThrough;

impl Codec for PassThrough {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = PassThrough;
    type Decoder = PassThrough;

    fn encoder(&mut self) -> Self::Encoder {
        PassThrough
    }

    fn decoder(&mut self) -> Self::Decoder {
        PassThrough
    }
}

impl Encoder for PassThrough {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PassThrough {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Sends encoded export requests to one OTLP endpoint, over gRPC or HTTP/protobuf.
#[derive(Debug, Clone)]
pub struct WireSender {
    transport: Transport,
    timeout: Duration,
}

#[derive(Debug, Clone)]
enum Transport {
    Grpc {
        channel: tonic::transport::Channel,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: reqwest::Client,
        /// The endpoint without a signal path (`http://host:4318`).
        base: String,
        headers: http::HeaderMap,
    },
}

/// Why a [`WireSender`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("OTLP endpoint {endpoint:?} cannot be used: {error}")]
pub struct WireBuildError {
    /// The endpoint, as configured.
    pub endpoint: String,
    /// What is wrong with it.
    pub error: String,
}

impl WireSender {
    /// A gRPC sender to `endpoint` (`http://host:port`) with these metadata (headers) and a time
    /// limit per request. Connects lazily: building it never waits for the network. Must be
    /// built inside the tokio runtime it will send from (a tonic channel binds to it); outside
    /// any runtime it is an error, not a panic.
    pub fn grpc(
        endpoint: &str,
        metadata: tonic::metadata::MetadataMap,
        timeout: Duration,
    ) -> Result<Self, WireBuildError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(WireBuildError {
                endpoint: endpoint.to_owned(),
                error: "a gRPC sender must be built inside a tokio runtime".into(),
            });
        }
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| WireBuildError {
                endpoint: endpoint.to_owned(),
                error: e.to_string(),
            })?
            .timeout(timeout)
            .connect_lazy();
        Ok(WireSender {
            transport: Transport::Grpc { channel, metadata },
            timeout,
        })
    }

    /// An HTTP/protobuf sender to `endpoint` (`http://host:4318`; the signal's path,
    /// `/v1/traces` or `/v1/logs`, is added unless the endpoint already ends with it) with these
    /// headers and a time limit per request.
    pub fn http(
        endpoint: &str,
        headers: http::HeaderMap,
        timeout: Duration,
    ) -> Result<Self, WireBuildError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| WireBuildError {
                endpoint: endpoint.to_owned(),
                error: e.to_string(),
            })?;
        let base = ["/v1/traces", "/v1/logs"]
            .iter()
            .find_map(|p| endpoint.trim_end_matches('/').strip_suffix(p))
            .unwrap_or(endpoint.trim_end_matches('/'))
            .to_owned();
        Ok(WireSender {
            transport: Transport::Http {
                client,
                base,
                headers,
            },
            timeout,
        })
    }

    /// Sends one encoded request of `signal` and waits for the answer (within the timeout).
    /// gRPC `INVALID_ARGUMENT` and HTTP 400 are rejections; anything else that is not a
    /// success is a failure.
    pub async fn send(&self, signal: WireSignal, body: Bytes) -> Result<(), SinkError> {
        let call = async {
            match &self.transport {
                Transport::Grpc { channel, metadata } => {
                    let mut grpc = tonic::client::Grpc::new(channel.clone());
                    grpc.ready()
                        .await
                        .map_err(|e| SinkError::Failed(format!("connection not ready: {e}")))?;
                    let mut request = tonic::Request::new(body);
                    *request.metadata_mut() = metadata.clone();
                    let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
                    grpc.unary(request, path, PassThrough)
                        .await
                        .map(|_| ())
                        .map_err(|status| {
                            // Worded as the SDK exporter words it: the code's name, then the
                            // collector's message.
                            let text = format!(
                                "export failed with gRPC code: {:?}, message: {:?}",
                                status.code(),
                                status.message()
                            );
                            match status.code() {
                                tonic::Code::InvalidArgument => SinkError::Rejected(text),
                                _ => SinkError::Failed(text),
                            }
                        })
                }
                Transport::Http {
                    client,
                    base,
                    headers,
                } => {
                    let url = format!("{base}{}", signal.http_path());
                    let answer = client
                        .post(url)
                        .headers(headers.clone())
                        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| SinkError::Failed(format!("HTTP export failed: {e}")))?;
                    let status = answer.status();
                    match status.as_u16() {
                        200..=299 => Ok(()),
                        400 => Err(SinkError::Rejected(format!(
                            "HTTP export failed with status code: {status}"
                        ))),
                        _ => Err(SinkError::Failed(format!(
                            "HTTP export failed with status code: {status}"
                        ))),
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::Timeout(self.timeout)),
        }
    }
}
