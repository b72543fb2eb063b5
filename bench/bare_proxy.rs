//! The floor of a Rust proxy on hyper: what one HTTP hop costs with Tollgate's server and client
//! stack (tokio, hyper's server, hyper-util's pooled client) and none of Tollgate's work. Run
//! by `bench/peers.py` beside nginx and Tollgate, so the gap between nginx and Tollgate splits
//! into what the stack costs and what Tollgate adds (docs/BENCHMARKS.md).
//!
//! It speaks just enough of Tollgate's command line for the harness: `keys create --json`
//! prints a placeholder key; `serve` listens on `PORT`, answers `/health/ready`, and relays
//! every other request to `OPENAI_BASE_URL` with `OPENAI_API_KEY` in place of the caller's
//! credential. Not a product: no limits, no checks, no records, no logs.

#![expect(
    clippy::print_stdout,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "a bench tool: no shutdown to wait for"
)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("keys") {
        println!("{{\"key\": \"bare\"}}");
        return;
    }
    let port: u16 = std::env::var("PORT").map_or(8080, |p| p.parse().expect("PORT"));
    let base = std::env::var("OPENAI_BASE_URL").expect("OPENAI_BASE_URL");
    let base = base.trim_end_matches("/v1").to_owned();
    let key = HeaderValue::try_from(format!(
        "Bearer {}",
        std::env::var("OPENAI_API_KEY").expect("OPENAI_API_KEY")
    ))
    .expect("key");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("bind");
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                relay(client.clone(), base.clone(), key.clone(), request)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

async fn relay(
    client: Client<HttpConnector, Incoming>,
    base: String,
    key: HeaderValue,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if request.uri().path() == "/health/ready" {
        return Ok(Response::new(full("ok")));
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(uri) = format!("{base}{path}").parse::<Uri>() else {
        return Ok(Response::new(full("bad path")));
    };
    *request.uri_mut() = uri;
    request.headers_mut().remove(HOST);
    request.headers_mut().insert(AUTHORIZATION, key);
    Ok(match client.request(request).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(_) => Response::builder()
            .status(502)
            .body(full("upstream failed"))
            .expect("response"),
    })
}

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}
