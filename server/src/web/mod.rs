//! The HTTP listener on `[web] listen`: one axum server shared by the web UI, its JSON API
//! and the HTTP feeds (OTT data loggers, telemetry). Each part contributes a `Router`
//! (composed in `server.rs`); this module binds the socket, serves until shutdown and lets
//! requests in flight finish.
//!
//! - `/healthz`: liveness for load balancers and wall screens (no login).

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::routing::get;

use crate::shutdown::Shutdown;

/// Routes every deployment has, whatever else is switched on.
pub fn base_routes() -> Router {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Binds `listen` and serves `app` until `shutdown`; requests in flight are completed.
pub async fn serve(listen: SocketAddr, app: Router, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {listen} ([web] listen)"))?;
    tracing::info!(%listen, "web listener up");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.wait())
    .await
    .context("the web listener failed")
}
