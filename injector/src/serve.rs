//! Serving: the webhook over TLS (HTTP/2 and HTTP/1.1), `/healthz` and `/metrics` in plain HTTP.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;

/// Longest in-flight requests get to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` over TLS on `listener` until `shutdown`, then drains open connections.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut incoming = daprs_api::tls::tls_incoming(listener, config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(stream)) => {
                    let service = TowerToHyperService::new(app.clone());
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "webhook connection ended with an error");
                        }
                    });
                }
                Some(Err(error)) => tracing::debug!(%error, "webhook accept failed"),
                None => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    drop(incoming);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("webhook connections still open after the drain timeout");
    }
}

/// Serves a plain HTTP `app` until `shutdown`.
pub async fn serve_plain(listener: TcpListener, app: Router, mut shutdown: watch::Receiver<bool>) {
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(%error, "HTTP server failed");
    }
}
