//! A minimal hyper 1 server on tokio's multi-threaded runtime: `GET /` returns
//! `Hello, World!` as text/plain and `GET /livez` returns `ok`. It has no router, no
//! middleware and no logging, so the benchmark can show what peregrine's own layers cost on
//! top of the same HTTP stack. It listens on 127.0.0.1:PORT and exits on SIGTERM or SIGINT
//! without draining open connections.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

async fn handle(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => (StatusCode::OK, "Hello, World!"),
        (&Method::GET, "/livez") => (StatusCode::OK, "ok"),
        _ => (StatusCode::NOT_FOUND, "not found"),
    };

    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    Ok(response)
}

fn read_port() -> Result<u16, String> {
    let text = std::env::var("PORT").unwrap_or_default();
    text.parse()
        .map_err(|_| format!("environment variable PORT must be a TCP port number, got {text:?}"))
}

async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        };

        tokio::spawn(async move {
            // A client that resets its connection is not an error of the server.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let port = match read_port() {
        Ok(port) => port,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };

    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = match TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("failed to listen on {address}: {err}");
            return ExitCode::FAILURE;
        }
    };

    match serve(listener).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("accept failed: {err}");
            ExitCode::FAILURE
        }
    }
}
