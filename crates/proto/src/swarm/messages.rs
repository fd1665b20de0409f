//! What peers say: the handshakes and every live message, up to a verified piece.

use std::time::Instant;

use super::*;

impl Swarm {
    pub(super) fn on_handshake(&mut self, id: PeerId, hs: wire::Handshake) {
        if hs.info_hash != self.config.info_hash.0 {
            return self.close(id, "handshake for another torrent".into());
        }
        if hs.peer_id == self.config.peer_id {
            let addr = self.peers[&id].addr;
            self.self_addrs.insert(addr);
            self.addrs.remove(&addr);
            return self.close(id, "connected to ourselves".into());
        }
        let ip = self.peers[&id].addr.ip();
        if self.banned_ids.contains(&(ip, hs.peer_id)) {
            return self.close(id, "banned peer".into());
        }
        if !hs.extensions {
            return self.close(id, "peer lacks the extension protocol (BEP 10)".into());
        }
        // One connection per peer: keep the one opened by the peer with the smaller id, a rule
        // both sides agree on without talking.
        let outbound = self.peers[&id].outbound;
        let opener = |outbound: bool| {
            if outbound {
                self.config.peer_id
            } else {
                hs.peer_id
            }
        };
        if let Some((&other, other_peer)) = self
            .peers
            .iter()
            .find(|(o, p)| **o != id && p.remote_id == Some(hs.peer_id) && p.addr.ip() == ip)
        {
            let (keep_new, other_outbound) = (opener(outbound), opener(other_peer.outbound));
            if keep_new < other_outbound {
                self.close(other, "duplicate connection".into());
            } else {
                return self.close(id, "duplicate connection".into());
            }
        }
        let p = self.peers.get_mut(&id).unwrap();
        p.remote_id = Some(hs.peer_id);
        p.phase = Phase::Extended;
    }

    pub(super) fn on_message(&mut self, now: Instant, id: PeerId, msg: Message) {
        let phase = self.peers[&id].phase;
        match (phase, msg) {
            (_, Message::KeepAlive) => {}
            (Phase::Extended, Message::ExtHandshake(ext)) => self.on_ext_handshake(now, id, ext),
            (Phase::Extended, _) => self.close(id, "message before the extended handshake".into()),
            (Phase::Active, Message::ExtHandshake(_)) => {} // updates are allowed and ignored
            (Phase::Active, Message::Choke) => {
                let p = self.peers.get_mut(&id).unwrap();
                p.peer_choking = true;
                let dropped: Vec<u64> = std::mem::take(&mut p.requested).into_keys().collect();
                for seq in dropped {
                    self.inflight.remove(&seq);
                }
            }
            (Phase::Active, Message::Unchoke) => {
                self.peers.get_mut(&id).unwrap().peer_choking = false
            }
            (Phase::Active, Message::Interested) => {
                self.peers.get_mut(&id).unwrap().peer_interested = true;
                self.rechoke_if_slot_free(id);
            }
            (Phase::Active, Message::NotInterested) => {
                self.peers.get_mut(&id).unwrap().peer_interested = false
            }
            (Phase::Active, Message::Live(live)) => self.on_live(now, id, live),
            (Phase::Handshake, _) => unreachable!("handshake is decoded separately"),
        }
    }

    pub(super) fn on_ext_handshake(&mut self, now: Instant, id: PeerId, ext: ExtHandshake) {
        let Some(live_id) = ext.live_id else {
            return self.close(id, "peer does not speak the live extension".into());
        };
        let p = self.peers.get_mut(&id).unwrap();
        p.live_id = live_id;
        p.is_source = ext.role == Some(Role::Injector);
        p.is_seed = ext.role == Some(Role::Seed);
        if let Some(port) = ext.listen_port
            && port != 0
        {
            let listen = SocketAddr::new(p.addr.ip(), port);
            p.listen_addr = Some(listen);
            p.trusted |= self.config.trusted.contains(&listen);
            if self.banned_addrs.contains(&listen) {
                return self.close(id, "banned peer".into());
            }
        }
        p.phase = Phase::Active;
        let listen = p.listen_addr;
        if let Some(listen) = listen {
            self.addrs.entry(listen).or_default().connected = true;
        }
        if self.config.role != Role::Injector {
            let p = self.peers.get_mut(&id).unwrap();
            wire::encode(&Message::Interested, 0, &mut p.outbox);
        }
        // Tell the new peer what we hold (the injector only what it has let go of).
        let entries: Vec<HaveEntry> = self
            .store
            .iter()
            .filter(|p| self.announceable(p, now))
            .map(have_entry)
            .collect();
        self.send_have(id, entries);
        self.rechoke_if_slot_free(id);
    }

    pub(super) fn on_live(&mut self, now: Instant, id: PeerId, msg: LiveMessage) {
        match msg {
            LiveMessage::Have {
                window_start,
                entries,
            } => {
                let p = self.peers.get_mut(&id).unwrap();
                p.set_window_start(window_start);
                for e in &entries {
                    p.learn_have(e.seq);
                }
                // The injector makes every piece: peers' claims teach it nothing.
                if self.config.role != Role::Injector {
                    let floor = self.window_floor();
                    for e in entries.iter().filter(|e| e.seq >= floor) {
                        self.known.learn(e, now);
                    }
                }
                if self.config.role == Role::Seed {
                    self.seed_backfill(&entries);
                }
            }
            LiveMessage::Request { seq } => {
                let have = self.store.contains(seq);
                if have && self.config.role == Role::Injector {
                    self.asked.insert(seq);
                }
                let p = self.peers.get_mut(&id).unwrap();
                if p.am_choking || !have || p.queue.len() >= MAX_QUEUE_PER_PEER {
                    send_live(p, LiveMessage::Reject { seq });
                } else if !p.queue.iter().any(|(s, _)| *s == seq) {
                    p.queue.push_back((seq, now));
                }
            }
            LiveMessage::Cancel { seq } => {
                self.peers
                    .get_mut(&id)
                    .unwrap()
                    .queue
                    .retain(|(s, _)| *s != seq);
            }
            LiveMessage::Reject { seq } => {
                let p = self.peers.get_mut(&id).unwrap();
                if let Some(sent) = p.requested.remove(&seq) {
                    // A refusal costs the requester the time it waited: count it as that slow.
                    p.note_rtt(now.saturating_duration_since(sent).as_micros() as u64);
                    p.refuse(seq, now);
                    if self.inflight.get(&seq) == Some(&id) {
                        self.inflight.remove(&seq);
                    }
                }
            }
            LiveMessage::Piece(piece) => self.on_piece(now, id, piece),
        }
    }

    pub(super) fn on_piece(&mut self, now: Instant, id: PeerId, wire_bytes: Bytes) {
        let p = self.peers.get_mut(&id).unwrap();
        let header = match SignedPiece::check_structure(&wire_bytes, self.config.max_payload) {
            Ok(h) => h,
            Err(e) => return self.ban(id, format!("malformed piece: {e}")),
        };
        match p.requested.remove(&header.seq) {
            Some(sent) => p.note_rtt(now.saturating_duration_since(sent).as_micros() as u64),
            // Asked for, then given up on as too slow: still worth having if it is needed.
            None if p.refused.contains_key(&header.seq) => {}
            None => {
                self.stats.unrequested += 1;
                return; // never asked for: ignore it
            }
        }
        if self.inflight.get(&header.seq) == Some(&id) {
            self.inflight.remove(&header.seq);
        }
        if self.store.contains(header.seq) || header.seq < self.window_floor() {
            self.stats.duplicates += 1;
            return;
        }
        let piece = match SignedPiece::verify(
            wire_bytes,
            &self.config.public_key,
            &self.config.info_hash,
            self.config.max_payload,
        ) {
            Ok(piece) => piece,
            Err(e) => {
                self.stats.pieces_rejected += 1;
                return self.ban(id, format!("bad piece {}: {e}", header.seq));
            }
        };
        let p = self.peers.get_mut(&id).unwrap();
        p.down_recent += header.payload_len as u64;
        self.stats.pieces_received += 1;
        self.stats.bytes_down += header.payload_len as u64;
        self.accept_piece(now, piece);
    }

    /// A verified piece: store it, tell everyone who lacks it, drop duplicate requests.
    pub(super) fn accept_piece(&mut self, now: Instant, piece: SignedPiece) {
        let h = *piece.header();
        self.known.confirm(h.seq, h.timestamp_us, h.flags, now);
        if h.end_of_stream() {
            self.eos_seq = Some(h.seq);
        }
        let entry = have_entry(&piece);
        self.store.insert(piece);
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for pid in ids {
            let p = self.peers.get_mut(&pid).unwrap();
            if p.requested.remove(&h.seq).is_some() {
                send_live(p, LiveMessage::Cancel { seq: h.seq });
            }
            if p.is_active() && !p.haves.contains(&h.seq) {
                self.send_have(pid, vec![entry]);
            }
        }
        self.inflight.remove(&h.seq);
        self.evict();
    }

    // ----- the periodic work, run after every event ---------------------------------------
}
