//! The live torrent `nordlys receive` joins: from a file, or fetched from an http:// URL,
//! retried within a bound while the server cannot be reached (at boot the network may come
//! up after the receiver).

use std::time::Duration;

use anyhow::bail;

use crate::appliance::config::StreamSource;
use crate::torrent::LiveTorrent;

/// How long a torrent URL is tried when its server cannot be reached (at boot the network
/// may come up after us), and how often. An answer that is not a torrent is not retried.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(60);
const FETCH_RETRY_EVERY: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch failed: worth another try (server down, 5xx) or not (the answer is wrong).
enum FetchError {
    Transient(String),
    Permanent(String),
}

/// A torrent from a file, or from an http:// URL (retried up to [`FETCH_DEADLINE`] while the
/// server cannot be reached).
pub(super) async fn load_torrent(source: &StreamSource) -> anyhow::Result<LiveTorrent> {
    let url = match source {
        StreamSource::TorrentFile(path) => return Ok(LiveTorrent::read(path)?),
        StreamSource::TorrentUrl(url) => url.as_str(),
    };
    let client = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?;
    let deadline = tokio::time::Instant::now() + FETCH_DEADLINE;
    let mut attempt = 1;
    loop {
        let why = match fetch_torrent(&client, url).await {
            Ok(t) => return Ok(t),
            Err(FetchError::Permanent(why)) => bail!("cannot use the torrent at {url}: {why}"),
            Err(FetchError::Transient(why)) => why,
        };
        if tokio::time::Instant::now() + FETCH_RETRY_EVERY >= deadline {
            bail!(
                "cannot fetch the torrent at {url}: {why} (gave up after {attempt} attempts in {} s)",
                FETCH_DEADLINE.as_secs()
            );
        }
        tracing::warn!(
            "cannot fetch the torrent at {url} yet: {why}; attempt {attempt}, next in {} s, giving up {} s after the first",
            FETCH_RETRY_EVERY.as_secs(),
            FETCH_DEADLINE.as_secs()
        );
        tokio::time::sleep(FETCH_RETRY_EVERY).await;
        attempt += 1;
    }
}

async fn fetch_torrent(client: &reqwest::Client, url: &str) -> Result<LiveTorrent, FetchError> {
    // Only the outermost message: reqwest's and the parser's chains repeat their own text.
    let transient = |e: reqwest::Error| {
        let what = if e.is_timeout() {
            format!("no answer within {} s", FETCH_TIMEOUT.as_secs())
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            e.to_string()
        };
        FetchError::Transient(what)
    };
    let mut resp = client.get(url).send().await.map_err(transient)?;
    let status = resp.status();
    if !status.is_success() {
        let why = format!("the server answered HTTP {status}");
        // Server trouble may pass; a missing or forbidden file will not.
        return Err(if status.is_server_error() || status.as_u16() == 429 {
            FetchError::Transient(why)
        } else {
            FetchError::Permanent(why)
        });
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transient)? {
        body.extend_from_slice(&chunk);
        if body.len() > crate::torrent::MAX_TORRENT_BYTES {
            return Err(FetchError::Permanent(format!(
                "the answer is more than {} bytes: not a torrent",
                crate::torrent::MAX_TORRENT_BYTES
            )));
        }
    }
    LiveTorrent::parse(&body).map_err(|e| {
        let kind = content_type.map_or(String::new(), |t| format!(" ({t})"));
        FetchError::Permanent(format!(
            "the answer{kind} is not a live torrent: {e}; check the URL"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one HTTP response with `body` to each connection.
    async fn serve(body: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        format!("http://{addr}/event.torrent")
    }

    #[tokio::test]
    async fn torrent_from_a_url() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
        let bytes = LiveTorrent::create("hall", &key, 32712, 30, &[]).unwrap();
        let url = serve(bytes).await;
        let t = load_torrent(&StreamSource::parse(&url).unwrap())
            .await
            .unwrap();
        assert_eq!(t.name, "hall");
    }

    /// A server that cannot be reached is retried every 5 s and given up on after 60 s, with
    /// one message saying so (virtual time: the sleeps pass at once).
    #[cfg(not(target_arch = "aarch64"))] // paused clock: host only (see Cargo.toml)
    #[tokio::test(start_paused = true)]
    async fn a_server_that_is_down_is_retried_within_a_bound() {
        // A port the kernel picked and nobody listens on any more: connections are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/e.torrent");
        let t0 = tokio::time::Instant::now();
        let err = load_torrent(&StreamSource::parse(&url).unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot fetch the torrent at {url}: cannot connect (gave up after 12 attempts in 60 s)"
            )
        );
        assert!(t0.elapsed() <= FETCH_DEADLINE, "{:?}", t0.elapsed());
    }

    fn permanent(r: Result<LiveTorrent, FetchError>) -> String {
        match r {
            Err(FetchError::Permanent(why)) => why,
            Err(FetchError::Transient(why)) => panic!("transient: {why}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[tokio::test]
    async fn oversized_or_bad_downloads_are_refused_at_once() {
        let client = reqwest::Client::new();
        let url = serve(vec![b'x'; crate::torrent::MAX_TORRENT_BYTES + 10]).await;
        let why = permanent(fetch_torrent(&client, &url).await);
        assert!(why.contains("not a torrent"), "{why}");
        let url = serve(b"d4:spam4:eggse".to_vec()).await;
        permanent(fetch_torrent(&client, &url).await);
        // A JPEG: one message, said once, and no retry (load_torrent returns at once).
        let url = serve(vec![0xff, 0xd8, 0xff, 0xe0]).await;
        let err = load_torrent(&StreamSource::parse(&url).unwrap())
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert_eq!(text.matches("unexpected byte").count(), 1, "{text}");
        assert!(
            text.starts_with(&format!("cannot use the torrent at {url}: the answer")),
            "{text}"
        );
    }
}
