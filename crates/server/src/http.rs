//! The HTTPS listener: TLS accept, HTTP/1.1, `POST /rpc` with a body size limit, JSON-RPC
//! single and batch requests, and the HTTP status codes that go with auth errors.

use crate::api::{dispatch, Caller, Context};
use crate::rpc::{failure, success, Request, RpcError};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{header, Method, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    context: Arc<Context>,
    max_body: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let acceptor = acceptor.clone();
        let context = context.clone();
        let mut connection_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper::service::service_fn(move |request| {
                let context = context.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        handle(request, peer, &context, max_body).await,
                    )
                }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                }
                _ = connection_shutdown.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                }
            }
        });
    }
    // Keeps the executor type referenced for future HTTP/2 support without a warning.
    let _ = TokioExecutor::new();
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    context: &Arc<Context>,
    max_body: u64,
) -> Response<Full<Bytes>> {
    if request.uri().path() != "/rpc" {
        let error = RpcError::invalid_request("not found: the API is at POST /rpc");
        return json_response(StatusCode::NOT_FOUND, &failure(Value::Null, &error));
    }
    if request.method() != Method::POST {
        let error = RpcError::invalid_request("use POST /rpc with a JSON-RPC 2.0 body");
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &failure(Value::Null, &error),
        );
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(request.into_body(), max_body as usize)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let error = RpcError::invalid_request(format!(
                "request body larger than {max_body} bytes (--max-request-size)"
            ));
            return json_response(StatusCode::PAYLOAD_TOO_LARGE, &failure(Value::Null, &error));
        }
    };
    let caller = Caller::new(authorization, peer.ip());
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            let error = RpcError::parse_error(format!("request is not valid JSON: {e}"));
            return json_response(StatusCode::OK, &failure(Value::Null, &error));
        }
    };
    match parsed {
        Value::Array(items) if items.is_empty() => {
            let error = RpcError::invalid_request("empty batch");
            json_response(StatusCode::OK, &failure(Value::Null, &error))
        }
        Value::Array(items) => {
            let mut answers = Vec::new();
            for item in items {
                if let Some((answer, _)) = run_one(item, context, &caller).await {
                    answers.push(answer);
                }
            }
            if answers.is_empty() {
                Response::new(Full::new(Bytes::new()))
            } else {
                json_response(StatusCode::OK, &Value::Array(answers))
            }
        }
        single => match run_one(single, context, &caller).await {
            Some((answer, status)) => json_response(status, &answer).tap_auth_headers(),
            None => Response::new(Full::new(Bytes::new())),
        },
    }
}

/// Runs one request; `None` for notifications. Returns the answer and the HTTP status.
async fn run_one(
    item: Value,
    context: &Arc<Context>,
    caller: &Caller,
) -> Option<(Value, StatusCode)> {
    let request = match Request::from_value(item) {
        Ok(request) => request,
        Err((id, error)) => return Some((failure(id, &error), StatusCode::OK)),
    };
    let result = dispatch(context, caller, &request.method, request.params).await;
    match &result {
        Ok(_) => tracing::debug!(method = %request.method, peer = %caller.address, "API call"),
        Err(error) => tracing::info!(
            method = %request.method,
            peer = %caller.address,
            code = error.code,
            message = %error.message,
            "API call failed"
        ),
    }
    let id = request.id?;
    Some(match result {
        Ok(value) => (success(id, value), StatusCode::OK),
        Err(error) => (
            failure(id, &error),
            StatusCode::from_u16(error.http_status).unwrap_or(StatusCode::OK),
        ),
    })
}

/// Adds the headers that go with 401 and 429 answers.
trait AuthHeaders {
    fn tap_auth_headers(self) -> Self;
}

impl AuthHeaders for Response<Full<Bytes>> {
    fn tap_auth_headers(mut self) -> Self {
        match self.status() {
            StatusCode::UNAUTHORIZED => {
                self.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"slipstream\""),
                );
            }
            StatusCode::TOO_MANY_REQUESTS => {
                self.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
            }
            _ => {}
        }
        self
    }
}
