//! A node's HTTP status surface, on `--status-addr`: `GET /status` (JSON), `GET /` (a page
//! for people) and `GET /metrics` (Prometheus text), all from one status value.

mod history;
mod metrics;
mod page;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::net::node::NodeStatus;

/// Extra fields merged into the status (e.g. the player's counters).
pub type Extra = Arc<dyn Fn() -> Value + Send + Sync>;

/// The settings in effect, as (name, value) for the page: secrets left out by the caller.
pub type Settings = Vec<(String, String)>;

/// Where the status value comes from.
enum Source {
    /// A running node, asked on each request, plus extra fields.
    Node {
        requests: mpsc::Sender<oneshot::Sender<NodeStatus>>,
        extra: Option<Extra>,
    },
    /// A value no running node gives (the receiver's error state).
    Fixed(Extra),
}

#[derive(Clone)]
struct AppState {
    source: Arc<Source>,
    history: Arc<Mutex<history::History>>,
    settings: Arc<Settings>,
}

impl AppState {
    /// The status as `/status` serves it; `None` once the node's loop is gone.
    async fn status(&self) -> Option<Value> {
        match &*self.source {
            Source::Fixed(value) => Some(value()),
            Source::Node { requests, extra } => {
                let (tx, rx) = oneshot::channel();
                requests.send(tx).await.ok()?;
                let node = rx.await.ok()?;
                let mut value = serde_json::to_value(node).ok()?;
                if let (Some(extra), Some(obj)) = (extra, value.as_object_mut())
                    && let Value::Object(more) = extra()
                {
                    obj.extend(more);
                }
                Some(value)
            }
        }
    }
}

/// Serves status until the node's loop is gone.
pub async fn serve(
    listener: TcpListener,
    requests: mpsc::Sender<oneshot::Sender<NodeStatus>>,
    extra: Option<Extra>,
    settings: Settings,
) -> anyhow::Result<()> {
    run(listener, Source::Node { requests, extra }, settings).await
}

/// Serves a status no running node gives: the receiver's error state, where nothing joined
/// a swarm, yet the hall's state must be readable over the network.
pub async fn serve_value(
    listener: TcpListener,
    value: Extra,
    settings: Settings,
) -> anyhow::Result<()> {
    run(listener, Source::Fixed(value), settings).await
}

async fn run(listener: TcpListener, source: Source, settings: Settings) -> anyhow::Result<()> {
    let state = AppState {
        source: Arc::new(source),
        history: Arc::default(),
        settings: Arc::new(settings),
    };
    let sampler = tokio::spawn(sample(state.clone()));
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state);
    let served = axum::serve(listener, app).await;
    sampler.abort();
    Ok(served?)
}

/// Fills the history once a second, whether or not anyone looks, so the page opened after a
/// stall still shows it. Stops when the node's loop is gone.
async fn sample(state: AppState) {
    let mut tick = tokio::time::interval(history::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(value) = state.status().await else {
            return;
        };
        let sample = history::Sample::of(Instant::now(), &value);
        lock(&state.history).push(sample);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn index(State(s): State<AppState>) -> Result<impl IntoResponse, StatusCode> {
    let value = s.status().await.ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
    let html = page::render(&value, &lock(&s.history), &s.settings, Instant::now());
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(html)))
}

async fn status(State(s): State<AppState>) -> Result<Json<Value>, StatusCode> {
    s.status()
        .await
        .map(Json)
        .ok_or(StatusCode::SERVICE_UNAVAILABLE)
}

async fn metrics(State(s): State<AppState>) -> Result<impl IntoResponse, StatusCode> {
    let value = s.status().await.ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
    Ok((
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&value),
    ))
}

/// A URL for the page: without user, password or query (where trackers take passkeys).
/// Text that is not a URL (a file path) is shown as it is.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.has_host() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("hidden"));
            }
            u.set_fragment(None);
            u.to_string()
        }
        _ => s.to_string(),
    }
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for status on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_and_queries() {
        assert_eq!(
            redact_url("http://user:secret@t.example:6969/announce?passkey=abc#x"),
            "http://t.example:6969/announce?hidden"
        );
        assert_eq!(
            redact_url("http://t:6969/announce"),
            "http://t:6969/announce"
        );
        assert_eq!(redact_url("/boot/event.torrent"), "/boot/event.torrent");
    }
}
