//! An OTLP trace receiver in the test process: HTTP/protobuf (`POST /v1/traces`) and gRPC
//! (`TraceService/Export` over h2c) on one port, decoding with the OpenTelemetry protocol's
//! own message types and keeping every span and the headers each export came with.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio_util::task::TaskTracker;

/// What arrived: spans, and per export the protocol and its headers.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    exports: Vec<(&'static str, hyper::HeaderMap)>,
}

/// A running receiver.
pub struct OtlpReceiver {
    pub address: SocketAddr,
    received: Arc<Mutex<Received>>,
}

type Answer = hyper::Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    received: Arc<Mutex<Received>>,
) -> Result<Answer, Infallible> {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (protocol, message) = match path.as_str() {
        "/v1/traces" => ("http/protobuf", body),
        GRPC_PATH => ("grpc", body.slice(5.min(body.len())..)),
        _ => {
            let mut missing = hyper::Response::new(Full::new(Bytes::new()).boxed());
            *missing.status_mut() = hyper::StatusCode::NOT_FOUND;
            return Ok(missing);
        }
    };
    let export = ExportTraceServiceRequest::decode(message).expect("a valid OTLP export");
    {
        let mut received = received.lock().unwrap();
        received.exports.push((protocol, headers));
        for resource in export.resource_spans {
            for scope in resource.scope_spans {
                received.spans.extend(scope.spans);
            }
        }
    }
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    if protocol == "http/protobuf" {
        let mut response = hyper::Response::new(Full::new(Bytes::from(reply)).boxed());
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            "application/x-protobuf".parse().unwrap(),
        );
        return Ok(response);
    }
    // gRPC: a length-prefixed message, then `grpc-status: 0` as a trailer.
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(reply.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&reply);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(Bytes::from(framed))),
        Ok(Frame::trailers(trailers)),
    ]);
    let mut response = hyper::Response::new(StreamBody::new(frames).boxed());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/grpc".parse().unwrap(),
    );
    Ok(response)
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = received.clone();
        TaskTracker::new().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let received = shared.clone();
                TaskTracker::new().spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(request, received.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Self { address, received }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }

    /// The protocol and headers of each export received so far.
    pub fn exports(&self) -> Vec<(&'static str, hyper::HeaderMap)> {
        self.received.lock().unwrap().exports.clone()
    }
}
