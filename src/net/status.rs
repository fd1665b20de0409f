//! `GET /status`: a node's status as JSON.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::net::node::NodeStatus;

/// Extra fields merged into the status (e.g. the player's counters).
pub type Extra = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
struct AppState {
    requests: mpsc::Sender<oneshot::Sender<NodeStatus>>,
    extra: Option<Extra>,
}

/// Serves status until the node's loop is gone.
pub async fn serve(
    listener: TcpListener,
    requests: mpsc::Sender<oneshot::Sender<NodeStatus>>,
    extra: Option<Extra>,
) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/status", get(status))
        .with_state(AppState { requests, extra });
    axum::serve(listener, app).await?;
    Ok(())
}

/// Serves a status no running node gives: the receiver's error state, where nothing joined
/// a swarm, yet the hall's state must be readable over the network.
pub async fn serve_value(listener: TcpListener, value: Extra) -> anyhow::Result<()> {
    let app = axum::Router::new().route("/status", get(move || async move { Json(value()) }));
    axum::serve(listener, app).await?;
    Ok(())
}

async fn status(State(s): State<AppState>) -> Result<Json<serde_json::Value>, StatusCode> {
    let (tx, rx) = oneshot::channel();
    s.requests
        .send(tx)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let node = rx.await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let mut value = serde_json::to_value(node).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    if let (Some(extra), Some(obj)) = (&s.extra, value.as_object_mut())
        && let serde_json::Value::Object(more) = extra()
    {
        obj.extend(more);
    }
    Ok(Json(value))
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for status on {addr}: {e}"))
}
