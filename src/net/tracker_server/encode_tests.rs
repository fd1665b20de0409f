//! Round trips: announce replies encoded by the server, decoded by the client's parser.

use super::*;
use crate::net::tracker::parse_response;

#[test]
fn compact_reply_splits_families_and_round_trips() {
    let v4: SocketAddr = "10.0.0.1:6881".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:6882".parse().unwrap();
    let reply = AnnounceReply {
        interval: Duration::from_secs(30),
        complete: 1,
        incomplete: 1,
        peers: vec![
            PeerInfo {
                peer_id: [1; 20],
                addr: v4,
            },
            PeerInfo {
                peer_id: [2; 20],
                addr: v6,
            },
        ],
    };
    for compact in [true, false] {
        let params = AnnounceParams {
            info_hash: InfoHash([0; 20]),
            peer_id: [3; 20],
            port: 1,
            left: 0,
            event: None,
            numwant: 50,
            compact,
            no_peer_id: false,
            ip: None,
        };
        let body = encode_announce(&reply, &params).unwrap();
        if compact {
            assert!(body.windows(7).any(|w| w == b"peers6:"));
        }
        let parsed = parse_response(&body).unwrap();
        assert_eq!(parsed.peers, vec![v4, v6], "compact={compact}");
        assert_eq!(parsed.interval, Duration::from_secs(30));
    }
}
