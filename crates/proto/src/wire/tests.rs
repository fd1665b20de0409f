use super::*;

fn round_trip(msg: Message) {
    let mut buf = BytesMut::new();
    let id = match msg {
        Message::Pex(_) => OUR_PEX_ID,
        _ => OUR_LIVE_ID,
    };
    encode(&msg, id, &mut buf);
    let (back, used) = decode(&buf, max_message_len(32712)).unwrap();
    assert_eq!(back, msg);
    assert_eq!(used, buf.len());
    for cut in 0..buf.len() {
        assert_eq!(decode(&buf[..cut], 1 << 20), Err(DecodeError::NeedMore));
    }
}

#[test]
fn messages_round_trip() {
    round_trip(Message::KeepAlive);
    round_trip(Message::Choke);
    round_trip(Message::Unchoke);
    round_trip(Message::Interested);
    round_trip(Message::NotInterested);
    round_trip(Message::ExtHandshake(ExtHandshake {
        live_id: Some(OUR_LIVE_ID),
        listen_port: Some(6881),
        role: Some(Role::Seed),
        client: Some("nordlys 0.1".into()),
        pex_id: Some(OUR_PEX_ID),
    }));
    round_trip(Message::Pex(Pex::default()));
    round_trip(Message::Pex(Pex {
        added: vec![
            ("10.0.0.1:6881".parse().unwrap(), PEX_REACHABLE),
            ("10.0.0.2:51413".parse().unwrap(), 0),
            ("[2001:db8::1]:6881".parse().unwrap(), PEX_REACHABLE),
        ],
        dropped: vec![
            "10.0.0.3:1".parse().unwrap(),
            "[2001:db8::2]:65535".parse().unwrap(),
        ],
    }));
    round_trip(Message::Live(LiveMessage::Have {
        window_start: 3,
        entries: vec![
            HaveEntry {
                seq: 3,
                timestamp_us: 10,
                flags: 1,
            },
            HaveEntry {
                seq: 4,
                timestamp_us: 20,
                flags: 0,
            },
        ],
    }));
    round_trip(Message::Live(LiveMessage::Request { seq: u64::MAX }));
    round_trip(Message::Live(LiveMessage::Reject { seq: 7 }));
    round_trip(Message::Live(LiveMessage::Cancel { seq: 8 }));
    let sub = Substream { index: 3, of: 8 };
    round_trip(Message::Live(LiveMessage::Subscribe(sub)));
    round_trip(Message::Live(LiveMessage::Unsubscribe(sub)));
    assert_eq!(Substream::of_seq(1_700_000_000_011, 8), sub);
    round_trip(Message::Live(LiveMessage::Piece(Bytes::from_static(
        b"abc",
    ))));
}

#[test]
fn handshake_round_trip_and_garbage() {
    let hs = Handshake {
        extensions: true,
        info_hash: [1; 20],
        peer_id: [2; 20],
    };
    let bytes = hs.encode();
    assert_eq!(Handshake::decode(&bytes).unwrap(), hs);
    assert_eq!(Handshake::decode(&bytes[..30]), Err(DecodeError::NeedMore));
    assert_eq!(
        Handshake::decode(b"GET / HTTP/1.1\r\n"),
        Err(DecodeError::BadHandshake)
    );
    // A prefix of the protocol string is not yet wrong.
    assert_eq!(Handshake::decode(&bytes[..10]), Err(DecodeError::NeedMore));
    assert_eq!(
        Handshake::decode(&[19, b'B', b'X']),
        Err(DecodeError::BadHandshake)
    );
}

#[test]
fn hostile_lengths_are_refused_before_buffering() {
    let huge = [0xff, 0xff, 0xff, 0xff, 20];
    assert_eq!(
        decode(&huge, 1 << 20),
        Err(DecodeError::TooLong {
            len: u32::MAX as usize,
            max: 1 << 20
        })
    );
    // A BEP 3 `have` (id 4) is not part of the live protocol.
    assert_eq!(
        decode(&[0, 0, 0, 5, 4, 0, 0, 0, 1], 100),
        Err(DecodeError::UnknownMessage(4))
    );
    // HAVE whose count disagrees with its length.
    let mut buf = BytesMut::new();
    encode(
        &Message::Live(LiveMessage::Have {
            window_start: 0,
            entries: vec![],
        }),
        OUR_LIVE_ID,
        &mut buf,
    );
    buf[4 + 2 + 1 + 8 + 1] = 5; // count = 5, no entries follow
    assert_eq!(
        decode(&buf, 1 << 20),
        Err(DecodeError::HaveCountMismatch { count: 5, len: 0 })
    );
}

#[test]
fn decode_never_panics_on_random_input() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for _ in 0..20_000 {
        let len = rng.random_range(0..64);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if buf.len() >= 5 && rng.random_bool(0.7) {
            let body = (buf.len() - 4) as u32;
            buf[..4].copy_from_slice(&body.to_be_bytes());
            buf[4] = if rng.random_bool(0.5) { 20 } else { buf[4] % 8 };
        }
        let _ = decode(&buf, 1 << 16);
        let _ = Handshake::decode(&buf);
    }
}

/// `buf` framed as an extended handshake (id 20, extended id 0).
fn ext_frame(body: &[u8]) -> Vec<u8> {
    let mut frame = ((body.len() + 2) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[MSG_EXTENDED, 0]);
    frame.extend_from_slice(body);
    frame
}

fn decode_ext(body: &[u8]) -> Result<ExtHandshake, DecodeError> {
    match decode(&ext_frame(body), 1 << 20)? {
        (Message::ExtHandshake(h), _) => Ok(h),
        (other, _) => panic!("not a handshake: {other:?}"),
    }
}

#[test]
fn unsorted_ext_handshake_is_accepted() {
    let body = b"d1:v4:xxxx1:md12:nordlys_livei1ee1:pi6881ee";
    // bendy 0.6, which decoded this before, refuses it: its keys are not sorted.
    let mut strict = bendy::decoding::Decoder::new(body);
    let strict_result = (|| -> Result<(), bendy::decoding::Error> {
        if let Some(bendy::decoding::Object::Dict(mut d)) = strict.next_object()? {
            while d.next_pair()?.is_some() {}
        }
        Ok(())
    })();
    assert!(strict_result.is_err(), "bendy is expected to reject this");
    assert_eq!(
        decode_ext(body).unwrap(),
        ExtHandshake {
            live_id: Some(1),
            listen_port: Some(6881),
            role: None,
            client: Some("xxxx".into()),
            pex_id: None,
        }
    );
    // Nested `m` unsorted too, among other clients' extensions.
    let nested = b"d1:md6:ut_pexi2e12:nordlys_livei3e11:ut_metadatai1eee";
    let ext = decode_ext(nested).unwrap();
    assert_eq!((ext.live_id, ext.pex_id), (Some(3), Some(2)));
}

#[test]
fn ext_handshake_ignores_unknown_keys_of_every_type() {
    // What libtorrent-like clients send, unsorted, with every bencode type under unknown
    // keys, nested lists and dictionaries, and known keys of the wrong type ignored.
    let body: &[u8] = b"d\
        12:complete_agoi-1e\
        1:md11:ut_metadatai3e12:nordlys_livei7e6:ut_pexi1e5:extrald1:xli1eleeeee\
        4:reqqi250e\
        6:yourip4:\x7f\x00\x00\x01\
        12:nordlys_role8:receiver\
        1:pi51413e\
        13:metadata_sizei31235e\
        4:listl4:spami42ed1:kd1:kleeee\
        1:v13:qBittorrent/4\
        4:dictd3:zzzi1e3:aaa0:e\
        4:ipv616:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\
        e";
    assert_eq!(
        decode_ext(body).unwrap(),
        ExtHandshake {
            live_id: Some(7),
            listen_port: Some(51413),
            role: Some(Role::Receiver),
            client: Some("qBittorrent/4".into()),
            pex_id: Some(1),
        }
    );
    // Known keys with values of the wrong type or out of range are ignored, not fatal.
    let odd = b"d1:v1:x1:pi70000e12:nordlys_rolei1e1:md12:nordlys_live3:abcee";
    assert_eq!(
        decode_ext(odd).unwrap(),
        ExtHandshake {
            live_id: None,
            listen_port: None,
            role: None,
            client: Some("x".into()),
            pex_id: None,
        }
    );
    assert_eq!(
        decode_ext(b"d1:mi1e1:pd1:p1:pee").unwrap(),
        ExtHandshake::default()
    );
    // Live id 0 means "disabled" (BEP 10); ids above 255 do not fit.
    assert_eq!(
        decode_ext(b"d1:md12:nordlys_livei0eee").unwrap().live_id,
        None
    );
    assert_eq!(
        decode_ext(b"d1:md12:nordlys_livei256eee").unwrap().live_id,
        None
    );
    // Duplicate keys: the first wins.
    let dup = b"d1:pi1e1:pi2ee";
    assert_eq!(decode_ext(dup).unwrap().listen_port, Some(1));
}

#[test]
fn hostile_ext_handshakes_are_errors() {
    use crate::bencode::{Error as B, MAX_DEPTH};
    let deep = [b"d1:x".repeat(MAX_DEPTH + 1), b"e".repeat(MAX_DEPTH + 1)].concat();
    assert!(matches!(
        decode_ext(&deep),
        Err(DecodeError::Bencode(B::TooDeep { .. }))
    ));
    let deep_list = [b"d1:x".to_vec(), vec![b'l'; 2000], vec![b'e'; 2001]].concat();
    assert!(matches!(
        decode_ext(&deep_list),
        Err(DecodeError::Bencode(B::TooDeep { .. }))
    ));
    assert!(matches!(
        decode_ext(b"d1:v99999999999999:xe"),
        Err(DecodeError::Bencode(B::StringPastEnd { .. }))
    ));
    assert!(matches!(
        decode_ext(b"d1:v999999999999999999999999:xe"),
        Err(DecodeError::Bencode(B::BadLength { .. }))
    ));
    assert!(matches!(
        decode_ext(b"d1:pi99999999999999999999ee"),
        Err(DecodeError::Bencode(B::BadInteger { .. }))
    ));
    let good = b"d1:md12:nordlys_livei1eee";
    for cut in 0..good.len() {
        assert!(
            matches!(decode_ext(&good[..cut]), Err(DecodeError::Bencode(_))),
            "{cut}"
        );
    }
    assert_eq!(
        decode_ext(b"d1:pi1eeGARBAGE"),
        Err(DecodeError::Bencode(B::TrailingBytes {
            offset: 8,
            count: 7
        }))
    );
    assert_eq!(
        decode_ext(b"d1:pi1eede"),
        Err(DecodeError::Bencode(B::TrailingBytes {
            offset: 8,
            count: 2
        }))
    );
    assert_eq!(decode_ext(b"li1ee"), Err(DecodeError::ExtHandshakeNotDict));
    assert_eq!(decode_ext(b"4:spam"), Err(DecodeError::ExtHandshakeNotDict));
    let big = [
        b"d1:v".to_vec(),
        format!("{}:", MAX_EXT_HANDSHAKE).into_bytes(),
    ]
    .concat();
    let big = [big, vec![b'x'; MAX_EXT_HANDSHAKE], b"e".to_vec()].concat();
    assert_eq!(
        decode_ext(&big),
        Err(DecodeError::ExtHandshakeTooLong {
            len: big.len(),
            max: MAX_EXT_HANDSHAKE
        })
    );
}

/// The name of a variant; the match is exhaustive, so a new variant must be added here
/// and to [`every_decode_error_is_reachable`].
fn variant(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::NeedMore => "NeedMore",
        DecodeError::BadHandshake => "BadHandshake",
        DecodeError::TooLong { .. } => "TooLong",
        DecodeError::Truncated { .. } => "Truncated",
        DecodeError::UnknownMessage(_) => "UnknownMessage",
        DecodeError::UnexpectedPayload { .. } => "UnexpectedPayload",
        DecodeError::UnknownExtension(_) => "UnknownExtension",
        DecodeError::ExtHandshakeTooLong { .. } => "ExtHandshakeTooLong",
        DecodeError::ExtHandshakeNotDict => "ExtHandshakeNotDict",
        DecodeError::Bencode(_) => "Bencode",
        DecodeError::UnknownLiveMessage(_) => "UnknownLiveMessage",
        DecodeError::WrongLength { .. } => "WrongLength",
        DecodeError::TooManyHaveEntries { .. } => "TooManyHaveEntries",
        DecodeError::BadSubstream { .. } => "BadSubstream",
        DecodeError::HaveCountMismatch { .. } => "HaveCountMismatch",
        DecodeError::PexTooLong { .. } => "PexTooLong",
        DecodeError::PexNotDict => "PexNotDict",
        DecodeError::BadCompactPeers { .. } => "BadCompactPeers",
        DecodeError::TooManyPexPeers { .. } => "TooManyPexPeers",
    }
}

#[test]
fn every_decode_error_is_reachable() {
    /// A frame: length prefix, then `body`.
    fn framed(body: &[u8]) -> Vec<u8> {
        [(body.len() as u32).to_be_bytes().as_slice(), body].concat()
    }
    let live = |kind: u8, rest: &[u8]| framed(&[&[MSG_EXTENDED, OUR_LIVE_ID, kind], rest].concat());
    let mut have_9000 = vec![LIVE_HAVE];
    have_9000.extend_from_slice(&0u64.to_be_bytes());
    have_9000.extend_from_slice(&9000u16.to_be_bytes());
    let have_9000 = framed(&[&[MSG_EXTENDED, OUR_LIVE_ID], have_9000.as_slice()].concat());
    let pex = |body: &[u8]| framed(&[&[MSG_EXTENDED, OUR_PEX_ID], body].concat());
    let mut pex_101 = b"d5:added606:".to_vec();
    pex_101.extend_from_slice(&[1; 606]);
    pex_101.push(b'e');
    let cases: Vec<(Result<Message, DecodeError>, DecodeError)> = vec![
        (
            decode(&[0, 0, 0, 1], 100).map(|m| m.0),
            DecodeError::NeedMore,
        ),
        (
            decode(&[0, 0, 0, 200, 0], 100).map(|m| m.0),
            DecodeError::TooLong { len: 200, max: 100 },
        ),
        (
            decode_frame(&Bytes::from_static(&[0, 0])),
            DecodeError::Truncated { what: "message" },
        ),
        (
            decode(&framed(&[MSG_EXTENDED]), 100).map(|m| m.0),
            DecodeError::Truncated {
                what: "extended message",
            },
        ),
        (
            decode(&framed(&[MSG_EXTENDED, OUR_LIVE_ID]), 100).map(|m| m.0),
            DecodeError::Truncated {
                what: "live message",
            },
        ),
        (
            decode(&live(LIVE_HAVE, &[0; 9]), 100).map(|m| m.0),
            DecodeError::Truncated { what: "HAVE" },
        ),
        (
            decode(&framed(&[6, 0, 0, 0, 0]), 100).map(|m| m.0),
            DecodeError::UnknownMessage(6),
        ),
        (
            decode(&framed(&[MSG_UNCHOKE, 9]), 100).map(|m| m.0),
            DecodeError::UnexpectedPayload { id: 1, len: 1 },
        ),
        (
            decode(&framed(&[MSG_EXTENDED, 9, 0]), 100).map(|m| m.0),
            DecodeError::UnknownExtension(9),
        ),
        (
            decode(&ext_frame(&[b' '; MAX_EXT_HANDSHAKE + 1]), 1 << 20).map(|m| m.0),
            DecodeError::ExtHandshakeTooLong {
                len: MAX_EXT_HANDSHAKE + 1,
                max: MAX_EXT_HANDSHAKE,
            },
        ),
        (
            decode(&ext_frame(b"i1e"), 100).map(|m| m.0),
            DecodeError::ExtHandshakeNotDict,
        ),
        (
            decode(&ext_frame(b"d1:x"), 100).map(|m| m.0),
            DecodeError::Bencode(crate::bencode::Error::Truncated { offset: 4 }),
        ),
        (
            decode(&live(9, &[]), 100).map(|m| m.0),
            DecodeError::UnknownLiveMessage(9),
        ),
        (
            decode(&live(LIVE_REQUEST, &[0; 7]), 100).map(|m| m.0),
            DecodeError::WrongLength {
                what: "REQUEST",
                len: 7,
                expected: 8,
            },
        ),
        (
            decode(&live(LIVE_CANCEL, &[0; 9]), 100).map(|m| m.0),
            DecodeError::WrongLength {
                what: "CANCEL",
                len: 9,
                expected: 8,
            },
        ),
        (
            decode(&live(LIVE_SUBSCRIBE, &[1]), 100).map(|m| m.0),
            DecodeError::WrongLength {
                what: "SUBSCRIBE",
                len: 1,
                expected: 2,
            },
        ),
        (
            decode(&live(LIVE_UNSUBSCRIBE, &[4, 4]), 100).map(|m| m.0),
            DecodeError::BadSubstream { index: 4, of: 4 },
        ),
        (
            decode(&live(LIVE_SUBSCRIBE, &[0, 0]), 100).map(|m| m.0),
            DecodeError::BadSubstream { index: 0, of: 0 },
        ),
        (
            decode(&live(LIVE_SUBSCRIBE, &[0, MAX_SUBSTREAMS + 1]), 100).map(|m| m.0),
            DecodeError::BadSubstream {
                index: 0,
                of: MAX_SUBSTREAMS + 1,
            },
        ),
        (
            decode(&have_9000, 100).map(|m| m.0),
            DecodeError::TooManyHaveEntries {
                count: 9000,
                max: MAX_HAVE_ENTRIES,
            },
        ),
        (
            decode(&live(LIVE_HAVE, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7]), 100).map(|m| m.0),
            DecodeError::HaveCountMismatch { count: 1, len: 1 },
        ),
        (
            Handshake::decode(b"\x13BitTorrent protocoX").map(|_| Message::KeepAlive),
            DecodeError::BadHandshake,
        ),
        (
            decode(&pex(&[b' '; MAX_PEX_LEN + 1]), 1 << 20).map(|m| m.0),
            DecodeError::PexTooLong {
                len: MAX_PEX_LEN + 1,
                max: MAX_PEX_LEN,
            },
        ),
        (
            decode(&pex(b"le"), 100).map(|m| m.0),
            DecodeError::PexNotDict,
        ),
        (
            decode(&pex(b"d7:dropped5:12345e"), 100).map(|m| m.0),
            DecodeError::BadCompactPeers {
                key: "dropped",
                len: 5,
            },
        ),
        (
            decode(&pex(&pex_101), 1 << 20).map(|m| m.0),
            DecodeError::TooManyPexPeers {
                what: "added",
                count: 101,
                max: MAX_PEX_PEERS,
            },
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (got, want) in cases {
        assert_eq!(got, Err(want.clone()));
        // Every reason a connection is closed with reads as a sentence, not a debug dump.
        let text = want.to_string();
        assert!(!text.is_empty() && !text.contains('{'), "{text}");
        seen.insert(variant(&want));
    }
    let all = [
        "NeedMore",
        "BadHandshake",
        "TooLong",
        "Truncated",
        "UnknownMessage",
        "UnexpectedPayload",
        "UnknownExtension",
        "ExtHandshakeTooLong",
        "ExtHandshakeNotDict",
        "Bencode",
        "UnknownLiveMessage",
        "WrongLength",
        "TooManyHaveEntries",
        "HaveCountMismatch",
        "BadSubstream",
        "PexTooLong",
        "PexNotDict",
        "BadCompactPeers",
        "TooManyPexPeers",
    ];
    assert_eq!(seen, all.into_iter().collect());
    assert_eq!(
        DecodeError::TooLong { len: 9, max: 8 }.to_string(),
        "message of 9 bytes exceeds 8"
    );
    assert_eq!(
        DecodeError::Bencode(crate::bencode::Error::TooDeep {
            max: 16,
            offset: 20
        })
        .to_string(),
        "extended handshake: nested deeper than 16 lists and dictionaries (at byte 20)"
    );
}

#[test]
fn pex_is_read_leniently_where_it_can_be() {
    let pex = |body: &[u8]| {
        let mut frame = ((body.len() + 2) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[MSG_EXTENDED, OUR_PEX_ID]);
        frame.extend_from_slice(body);
        match decode(&frame, 1 << 20).unwrap().0 {
            Message::Pex(p) => p,
            other => panic!("{other:?}"),
        }
    };
    // Unknown keys of any type, unsorted; flags of the wrong length count as none.
    let got = pex(b"d1:xli1ee7:added.f3:\x10\x10\x105:added6:\x0a\x00\x00\x01\x1a\xe1e");
    assert_eq!(got.added, vec![("10.0.0.1:6881".parse().unwrap(), 0)]);
    assert!(got.dropped.is_empty());
    // Keys of the wrong type are as if absent.
    assert_eq!(pex(b"d5:addedi7e7:droppedlee"), Pex::default());
}
