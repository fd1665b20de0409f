//! The tracker client against a real opentracker (Debian's whitelist build) on loopback.

mod common;

use std::net::SocketAddr;

use common::opentracker::OpenTracker;
use nordlys::net::tracker::{Announce, Event, TrackerError, announce, http_client};
use nordlys::torrent::InfoHash;

fn peer(hash: InfoHash, n: u8, port: u16) -> Announce {
    let mut peer_id = *b"-NL0001-000000000000";
    peer_id[19] = n;
    Announce {
        info_hash: hash,
        peer_id,
        port,
        uploaded: 0,
        downloaded: 0,
        left: 1000,
        event: Some(Event::Started),
        numwant: 50,
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn two_peers_see_each_other_through_opentracker() {
    // Bytes that need percent-encoding (space, '%', '&', 0xff) prove the encoding is right.
    let hash = InfoHash(*b"\x00 %&+=?\xff\xfe\x80nordlys-ot");
    let tracker = OpenTracker::start(&[hash.hex()]);
    let url = tracker.announce_url();
    // The announcer's own client: opentracker closes each connection after its answer.
    let client = http_client();
    let (a, b) = (peer(hash, 1, 7101), peer(hash, 2, 7102));

    announce(&client, &url, &a).await.unwrap();
    let r = announce(&client, &url, &b).await.unwrap();
    // opentracker lists the announcing peer too; what matters is that the other one is there.
    assert!(r.peers.contains(&local(7101)), "b sees a: {:?}", r.peers);
    assert!(r.interval >= std::time::Duration::from_secs(5));
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
    assert!(r.peers.contains(&local(7102)), "a sees b: {:?}", r.peers);

    // `stopped` removes b.
    announce(
        &client,
        &url,
        &Announce {
            event: Some(Event::Stopped),
            ..b
        },
    )
    .await
    .unwrap();
    let r = announce(&client, &url, &Announce { event: None, ..a })
        .await
        .unwrap();
    assert!(!r.peers.contains(&local(7102)), "b is gone: {:?}", r.peers);

    // An infohash outside the whitelist is refused with opentracker's own text.
    let other = peer(InfoHash([0x42; 20]), 3, 7103);
    match announce(&client, &url, &other).await {
        Err(TrackerError::Failure(text)) => assert!(text.contains("not authorized"), "{text}"),
        other => panic!("expected a failure reason, got {other:?}"),
    }
}
