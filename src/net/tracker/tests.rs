//! Unit tests of the tracker client: URL building, response decoding (including hostile
//! bodies) and the announce loop against the built-in tracker.

use super::*;
use crate::net::tracker_server::{self, TrackerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const HASH: InfoHash = InfoHash([0xab; 20]);

fn peer(n: u8, port: u16) -> Announce {
    let mut peer_id = *b"-NL0001-000000000000";
    peer_id[19] = n;
    Announce {
        info_hash: HASH,
        peer_id,
        port,
        uploaded: 0,
        downloaded: 0,
        left: 0,
        event: Some(Event::Started),
        numwant: 50,
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn spawn_tracker(config: TrackerConfig) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tracker_server::serve(listener, config));
    format!("http://{addr}/announce")
}

/// A one-shot-per-connection HTTP server that answers every request with `response`
/// (`None`: read the request and never answer).
async fn canned_server(response: Option<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let response = response.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                match response {
                    Some(r) => {
                        let _ = sock.write_all(&r).await;
                        let _ = sock.shutdown().await;
                    }
                    None => {
                        // Hold the connection open without answering.
                        let _ = sock.read(&mut buf).await;
                    }
                }
            });
        }
    });
    format!("http://{addr}/announce")
}

fn http_ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn percent_encoding_escapes_everything_but_unreserved() {
    let all: Vec<u8> = (0..=255).collect();
    let mut out = String::new();
    percent_encode_into(&all, &mut out);
    let decoded = url::form_urlencoded::parse(format!("x={out}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    // Lossy UTF-8 round trip is only exact for ASCII; check the ASCII half that way and
    // the raw form for the rest.
    assert_eq!(decoded.as_bytes()[..128], all[..128]);
    for b in 0..=255u8 {
        let mut one = String::new();
        percent_encode_into(&[b], &mut one);
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            assert_eq!(one, (b as char).to_string());
        } else {
            assert_eq!(one, format!("%{b:02X}"));
        }
    }
}

#[test]
fn announce_url_appends_to_existing_query_and_keeps_fragment() {
    let mut a = peer(1, 6881);
    a.info_hash = InfoHash(*b"\x00\x01 +&=%~abcXYZ09-._\xff");
    let u = announce_url("http://t.example/announce?passkey=abc#frag", &a).unwrap();
    assert!(
        u.starts_with(
            "http://t.example/announce?passkey=abc&info_hash=%00%01%20%2B%26%3D%25~abcXYZ09-._%FF&peer_id="
        ),
        "{u}"
    );
    assert!(u.ends_with("&event=started#frag"), "{u}");
    assert!(
        u.contains("&port=6881&") && u.contains("&compact=1&"),
        "{u}"
    );
    let u = announce_url("http://t.example/a", &Announce { event: None, ..a }).unwrap();
    assert!(u.starts_with("http://t.example/a?info_hash="), "{u}");
    assert!(!u.contains("event="), "{u}");
    assert!(matches!(
        announce_url("udp://t.example:6969", &peer(1, 1)),
        Err(TrackerError::BadUrl(_))
    ));
}

#[test]
fn parses_compact_dict_and_peers6() {
    let mut body = b"d8:intervali900e12:min intervali60e5:peers12:".to_vec();
    body.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 80]);
    body.extend_from_slice(b"6:peers618:");
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1a, 0xe2]);
    body.push(b'e');
    let r = parse_response(&body).unwrap();
    assert_eq!(r.interval, Duration::from_secs(900));
    assert_eq!(r.min_interval, Some(Duration::from_secs(60)));
    assert_eq!(
        r.peers,
        vec![
            "10.0.0.1:6881".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            "[::1]:6882".parse().unwrap()
        ]
    );

    let body = b"d8:intervali10e5:peersld2:ip8:10.0.0.74:porti7000eed2:ip3:::17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti7001eed2:ip11:example.org4:porti1eed2:ip8:10.0.0.94:porti0eeee";
    let r = parse_response(body).unwrap();
    assert_eq!(
        r.peers,
        vec![
            "10.0.0.7:7000".parse().unwrap(),
            "[::1]:7001".parse().unwrap()
        ]
    );
}

#[test]
fn unsorted_keys_decode_though_bendy_rejects_them() {
    // `peers` before `interval`, as some trackers send it.
    let body = b"d5:peers6:\x7f\x00\x00\x01\x1a\xe18:intervali120e8:completei1ee";
    let mut strict = bendy::decoding::Decoder::new(body);
    let strict_result = (|| -> Result<(), bendy::decoding::Error> {
        if let Some(bendy::decoding::Object::Dict(mut d)) = strict.next_object()? {
            while d.next_pair()?.is_some() {}
        }
        Ok(())
    })();
    assert!(strict_result.is_err(), "bendy is expected to reject this");
    let r = parse_response(body).unwrap();
    assert_eq!(r.interval, Duration::from_secs(120));
    assert_eq!(r.peers, vec![local(6881)]);
}

#[test]
fn failure_reason_and_clamping() {
    let e = parse_response(b"d14:failure reason9:not todaye").unwrap_err();
    assert!(
        matches!(&e, TrackerError::Failure(t) if t == "not today"),
        "{e}"
    );
    let r = parse_response(b"d8:intervali1e5:peers0:e").unwrap();
    assert_eq!(r.interval, MIN_INTERVAL);
    let r = parse_response(b"d8:intervali-5e5:peers0:e").unwrap();
    assert_eq!(r.interval, MIN_INTERVAL);
    let r = parse_response(b"d8:intervali99999999999e5:peers0:e").unwrap();
    assert_eq!(r.interval, MAX_INTERVAL);
    let r = parse_response(b"d5:peers0:e").unwrap();
    assert_eq!(r.interval, DEFAULT_INTERVAL);
}

#[test]
fn malformed_bodies_are_errors() {
    let cases: &[&[u8]] = &[
        b"",
        b"<html>502 Bad Gateway</html>",
        b"d8:intervali60e",
        b"d8:intervali60e5:peers99:abce",
        b"d8:intervali6x0e5:peers0:e",
        b"le",
        b"i42e",
        b"di1ei2ee",
        b"d8:interval5:sixtye",
        b"d5:peersi3ee",
        b"d8:intervali60e5:peers99999999999999999999999999:e",
    ];
    for case in cases {
        match parse_response(case) {
            Err(TrackerError::Malformed(_)) => {}
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(case)),
        }
    }
    let deep = [vec![b'l'; 10_000], vec![b'e'; 10_000]].concat();
    assert!(matches!(
        bdecode(&deep),
        Err(nordlys_proto::bencode::Error::TooDeep { .. })
    ));
    let many = [b"l".to_vec(), b"i0e".repeat(200_000), b"e".to_vec()].concat();
    assert!(matches!(
        bdecode(&many),
        Err(nordlys_proto::bencode::Error::TooManyValues { .. })
    ));
    // Bytes after the answer (a trailing newline) are ignored.
    assert_eq!(
        parse_response(b"d8:intervali60e5:peers0:e\n")
            .unwrap()
            .interval,
        Duration::from_secs(60)
    );
}

#[test]
fn random_and_mutated_input_never_panics() {
    let valid = b"d8:completei1e10:incompletei0e8:intervali30e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x1a\xe26:peers618:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1a\xe2e";
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut body = valid.to_vec();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % body.len();
            match next() % 3 {
                0 => body[i] = next() as u8,
                1 => body.truncate(i),
                _ => body.insert(i, b"dlie:0123456789"[(next() % 15) as usize]),
            }
            if body.is_empty() {
                break;
            }
        }
        let _ = parse_response(&body);
        let len = (next() % 64) as usize;
        let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = parse_response(&random);
    }
}

#[tokio::test]
async fn hostile_http_answers_are_errors() {
    let client = reqwest::Client::new();
    let a = peer(1, 1000);

    let url = canned_server(Some(http_ok(b"this is not bencode"))).await;
    let e = announce(&client, &url, &a).await.unwrap_err();
    assert!(matches!(e, TrackerError::Malformed(_)), "{e}");

    // Declared oversized body.
    let big = vec![b'x'; MAX_RESPONSE_BYTES + 1];
    let url = canned_server(Some(http_ok(&big))).await;
    let e = announce(&client, &url, &a).await.unwrap_err();
    assert!(matches!(e, TrackerError::TooLarge), "{e}");

    // Oversized body without a length: read until the bound, then give up.
    let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    r.extend_from_slice(&vec![b'x'; 2 * MAX_RESPONSE_BYTES]);
    let url = canned_server(Some(r)).await;
    let e = announce(&client, &url, &a).await.unwrap_err();
    assert!(matches!(e, TrackerError::TooLarge), "{e}");

    let url = canned_server(Some(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ))
    .await;
    let e = announce(&client, &url, &a).await.unwrap_err();
    assert!(matches!(e, TrackerError::Status(404)), "{e}");

    let body = b"d14:failure reason12:unregisterede";
    let mut r = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    let url = canned_server(Some(r)).await;
    let e = announce(&client, &url, &a).await.unwrap_err();
    assert!(
        matches!(&e, TrackerError::Failure(t) if t == "unregistered"),
        "{e}"
    );

    let url = canned_server(Some(b"garbage\r\n\r\n".to_vec())).await;
    let e = announce(&client, &url, &a).await.unwrap_err();
    assert!(matches!(e, TrackerError::Http(_)), "{e}");

    let url = canned_server(None).await;
    let e = announce_with_timeout(&client, &url, &a, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Timeout(_)), "{e}");

    // Unsorted keys over HTTP.
    let url = canned_server(Some(http_ok(
        b"d5:peers6:\x7f\x00\x00\x01\x1a\xe18:intervali60ee",
    )))
    .await;
    let r = announce(&client, &url, &a).await.unwrap();
    assert_eq!(r.peers, vec![local(6881)]);
}

#[tokio::test]
async fn two_peers_see_each_other_and_stopped_removes() {
    let url = spawn_tracker(TrackerConfig::default()).await;
    let client = reqwest::Client::new();
    let (a, b) = (peer(1, 7001), peer(2, 7002));

    let r = announce(&client, &url, &a).await.unwrap();
    assert_eq!(r.peers, vec![], "a tracker does not list a peer to itself");
    assert_eq!(r.interval, Duration::from_secs(30));
    let r = announce(&client, &url, &b).await.unwrap();
    assert_eq!(r.peers, vec![local(7001)]);
    let r = announce(
        &client,
        &url,
        &Announce {
            event: None,
            ..a.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.peers, vec![local(7002)]);

    let stop = Announce {
        event: Some(Event::Stopped),
        ..b.clone()
    };
    announce(&client, &url, &stop).await.unwrap();
    let r = announce(&client, &url, &Announce { event: None, ..a })
        .await
        .unwrap();
    assert_eq!(r.peers, vec![]);
}

#[tokio::test]
async fn silent_peers_expire() {
    let url = spawn_tracker(TrackerConfig {
        interval: Duration::from_millis(50),
        ..TrackerConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let (a, b) = (peer(1, 7001), peer(2, 7002));
    announce(&client, &url, &a).await.unwrap();
    let r = announce(&client, &url, &b).await.unwrap();
    assert_eq!(r.peers, vec![local(7001)]);
    // Keep announcing b; a must disappear once 2 x 50 ms passed without its announce.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = announce(&client, &url, &b).await.unwrap();
        if r.peers.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "peer a never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn announcers_find_each_other_and_stop_deregisters() {
    let url = spawn_tracker(TrackerConfig::default()).await;
    // A dead tracker beside the live one must not hold anything up.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/announce", l.local_addr().unwrap())
    };
    let timing = AnnouncerTiming {
        first_reannounce: Duration::from_millis(100),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..AnnouncerTiming::default()
    };
    let start = |n: u8, port: u16| {
        let (tx, rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_announcer_with(
            vec![dead.clone(), url.clone()],
            Announce {
                event: None,
                ..peer(n, port)
            },
            || (0, 0),
            tx,
            stop_rx,
            timing,
            Health::default(),
        ));
        (rx, stop_tx, task)
    };
    let (mut rx_a, stop_a, task_a) = start(1, 7001);
    let (mut rx_b, stop_b, task_b) = start(2, 7002);
    async fn wait_for(rx: &mut mpsc::Receiver<Vec<SocketAddr>>, want: SocketAddr) {
        let fut = async move {
            while let Some(peers) = rx.recv().await {
                if peers.contains(&want) {
                    return;
                }
            }
            panic!("announcer ended");
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .unwrap_or_else(|_| panic!("never saw {want}"))
    }
    wait_for(&mut rx_a, local(7002)).await;
    wait_for(&mut rx_b, local(7001)).await;

    stop_a.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task_a)
        .await
        .expect("announcer a returns after stop")
        .unwrap();
    let client = reqwest::Client::new();
    let r = announce(&client, &url, &peer(3, 7003)).await.unwrap();
    assert_eq!(r.peers, vec![local(7002)], "a sent stopped");

    drop(stop_b);
    tokio::time::timeout(Duration::from_secs(5), task_b)
        .await
        .expect("dropping the stop sender stops too")
        .unwrap();
    let r = announce(&client, &url, &peer(3, 7003)).await.unwrap();
    assert_eq!(r.peers, vec![]);
}
