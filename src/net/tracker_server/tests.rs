//! Tests of the built-in tracker: `Registry` rules with synthetic time, query parsing, and
//! the HTTP server end to end.

use super::*;
use crate::net::tracker::{Value, bdecode, percent_encode_into};
use tokio::net::TcpListener;

const HASH: InfoHash = InfoHash([7; 20]);

fn params(n: u8, port: u16) -> AnnounceParams {
    AnnounceParams {
        info_hash: HASH,
        peer_id: [n; 20],
        port,
        left: 1,
        event: None,
        numwant: DEFAULT_NUMWANT,
        compact: true,
        no_peer_id: false,
        ip: None,
    }
}

fn addr(n: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], port))
}

fn config(interval_secs: u64) -> TrackerConfig {
    TrackerConfig {
        interval: Duration::from_secs(interval_secs),
        ..TrackerConfig::default()
    }
}

#[test]
fn excludes_self_caps_numwant_and_counts() {
    let now = Instant::now();
    let mut r = Registry::new(config(30));
    for n in 1..=250u8 {
        let mut p = params(n, 1000 + n as u16);
        p.left = u64::from(n % 2);
        r.announce(now, &p, addr(n, 1000 + n as u16)).unwrap();
    }
    let mut p = params(1, 1001);
    p.numwant = MAX_NUMWANT;
    let reply = r.announce(now, &p, addr(1, 1001)).unwrap();
    assert_eq!(reply.peers.len(), MAX_NUMWANT);
    assert!(reply.peers.iter().all(|x| x.peer_id != [1; 20]));
    assert_eq!((reply.complete, reply.incomplete), (125, 125));
    p.numwant = 3;
    let reply = r.announce(now, &p, addr(1, 1001)).unwrap();
    assert_eq!(reply.peers.len(), 3);
    assert_eq!(r.size(), (1, 250));
}

#[test]
fn peers_expire_after_two_intervals() {
    let t0 = Instant::now();
    let mut r = Registry::new(config(30));
    r.announce(t0, &params(1, 1), addr(1, 1)).unwrap();
    let at = |s| t0 + Duration::from_secs(s);
    let reply = r.announce(at(60), &params(2, 2), addr(2, 2)).unwrap();
    assert_eq!(reply.peers.len(), 1, "60 s = 2 x interval: still listed");
    let reply = r.announce(at(61), &params(2, 2), addr(2, 2)).unwrap();
    assert_eq!(reply.peers, vec![], "61 s: expired");
    r.prune(at(200));
    assert_eq!(r.size(), (0, 0), "empty swarms are dropped");
}

#[test]
fn stopped_removes_and_limits_hold() {
    let now = Instant::now();
    let mut r = Registry::new(TrackerConfig {
        max_torrents: 2,
        max_peers_per_torrent: 3,
        ..config(30)
    });
    for n in 1..=5 {
        r.announce(now, &params(n, 1), addr(n, 1)).unwrap();
    }
    assert_eq!(r.size(), (1, 3), "swarm capped at 3 peers");
    // The newcomer that did not fit still gets peers.
    let reply = r.announce(now, &params(9, 1), addr(9, 1)).unwrap();
    assert_eq!(reply.peers.len(), 3);

    let mut stop = params(1, 1);
    stop.event = Some("stopped".into());
    let reply = r.announce(now, &stop, addr(1, 1)).unwrap();
    assert!(reply.peers.is_empty());
    assert_eq!(r.size(), (1, 2));

    let other = |b: u8| AnnounceParams {
        info_hash: InfoHash([b; 20]),
        ..params(1, 1)
    };
    r.announce(now, &other(1), addr(1, 1)).unwrap();
    assert_eq!(
        r.announce(now, &other(2), addr(1, 1)),
        Err("tracker is full (too many torrents)")
    );
    assert_eq!(r.size(), (2, 3));
}

fn query(p: &AnnounceParams) -> String {
    let mut q = String::from("info_hash=");
    percent_encode_into(&p.info_hash.0, &mut q);
    q.push_str("&peer_id=");
    percent_encode_into(&p.peer_id, &mut q);
    q.push_str(&format!("&port={}&left={}", p.port, p.left));
    q
}

#[test]
fn parses_announce_queries() {
    let mut want = params(1, 6881);
    want.info_hash = InfoHash(*b"\x00 +%&=\xff\xfeabcdefghijkl");
    let q = format!(
        "{}&event=started&numwant=9999&compact=1&ip=10.1.2.3",
        query(&want)
    );
    let got = parse_announce(&q).unwrap();
    assert_eq!(got.info_hash, want.info_hash);
    assert_eq!(got.event.as_deref(), Some("started"));
    assert_eq!(got.numwant, MAX_NUMWANT);
    assert!(got.compact);
    assert_eq!(got.ip, Some("10.1.2.3".parse().unwrap()));
    // `+` is a space in form encoding.
    let plus = query(&want).replace("%20", "+");
    assert_eq!(parse_announce(&plus).unwrap().info_hash, want.info_hash);

    let good = query(&want);
    for (bad, reason) in [
        ("", "missing info_hash"),
        ("info_hash=abc", "info_hash must be 20 bytes"),
        (&good.replace("port=6881", "port=0"), "invalid port"),
        (&good.replace("port=6881", "port=70000"), "invalid port"),
        (&good.replace("&port=6881", ""), "missing port"),
        (&format!("{good}&event=bogus"), "invalid event"),
        (&format!("{good}&numwant=x"), "invalid numwant"),
        (&format!("{good}&left=-1"), "invalid left"),
        (&"x".repeat(5000), "query too long"),
    ] {
        assert_eq!(parse_announce(bad), Err(reason), "{bad:?}");
    }
    // Broken escapes decode as literal bytes and fail the length check, not a panic.
    for q in ["info_hash=%", "info_hash=%4", "info_hash=%zz", "%%%=%&&&=="] {
        assert!(parse_announce(q).is_err());
    }
}

async fn spawn(config: TrackerConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, config));
    addr
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Vec<u8>) {
    let r = client.get(url).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn http_dict_form_loopback_ip_scrape_and_status() {
    let server = spawn(TrackerConfig::default()).await;
    let client = reqwest::Client::new();
    let a = params(1, 7001);
    let b = params(2, 7002);
    // From loopback, `ip` is honoured.
    let (status, body) = get(
        &client,
        format!("http://{server}/announce?{}&ip=192.168.5.5", query(&a)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        bdecode(&body).unwrap().get(b"peers"),
        Some(&Value::List(vec![]))
    );
    let (_, body) = get(&client, format!("http://{server}/announce?{}", query(&b))).await;
    let reply = bdecode(&body).unwrap();
    let Some(Value::List(peers)) = reply.get(b"peers") else {
        panic!("dict form expected without compact=1: {reply:?}");
    };
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].get(b"ip"), Some(&Value::Bytes(b"192.168.5.5")));
    assert_eq!(peers[0].get(b"port"), Some(&Value::Int(7001)));
    assert_eq!(peers[0].get(b"peer id"), Some(&Value::Bytes(&[1; 20])));
    // The response is canonical: bendy's strict decoder accepts it.
    let mut strict = bendy::decoding::Decoder::new(&body);
    if let Some(bendy::decoding::Object::Dict(mut d)) = strict.next_object().unwrap() {
        while d.next_pair().unwrap().is_some() {}
    }

    let mut q = String::from("info_hash=");
    percent_encode_into(&HASH.0, &mut q);
    let (_, body) = get(&client, format!("http://{server}/scrape?{q}&{q}")).await;
    let scrape = bdecode(&body).unwrap();
    let entry = scrape.get(b"files").and_then(|f| f.get(&HASH.0)).unwrap();
    assert_eq!(entry.get(b"incomplete"), Some(&Value::Int(2)));
    assert_eq!(entry.get(b"complete"), Some(&Value::Int(0)));

    let (status, body) = get(&client, format!("http://{server}/")).await;
    assert_eq!(status, 200);
    assert_eq!(body, b"nordlys tracker: 1 torrents, 2 peers\n");
}

#[tokio::test]
async fn bad_requests_get_failure_reasons() {
    let server = spawn(TrackerConfig::default()).await;
    let client = reqwest::Client::new();
    for q in [
        "".to_string(),
        "info_hash=short&peer_id=x&port=1".to_string(),
        "%ff%00%zz=%%%".to_string(),
        format!("{}&event=nope", query(&params(1, 1))),
        "a=".repeat(3000),
    ] {
        let (status, body) = get(&client, format!("http://{server}/announce?{q}")).await;
        assert_eq!(status, 200, "{q}");
        let reply = bdecode(&body).unwrap();
        assert!(
            matches!(reply.get(b"failure reason"), Some(Value::Bytes(_))),
            "{q}: {reply:?}"
        );
    }
    let (status, body) = get(&client, format!("http://{server}/scrape")).await;
    assert_eq!(status, 200);
    assert!(bdecode(&body).unwrap().get(b"failure reason").is_some());
    // The server is still healthy.
    let (status, _) = get(&client, format!("http://{server}/")).await;
    assert_eq!(status, 200);
}
