//! What peers say: the handshakes and every live message, up to a verified piece.

use super::*;
use bytes::BytesMut;

impl Swarm {
    /// Bytes from a connection: whole messages are handled as they complete. A message that
    /// arrives whole is decoded from `data` itself; only one split across reads is copied
    /// to join it, and a piece whose header came in an earlier read is not copied either.
    pub(super) fn on_data(&mut self, id: PeerId, mut data: Bytes) {
        let max_len = wire::max_message_len(self.config.max_payload);
        while let Some(peer) = self.peers.get_mut(id) {
            if peer.phase == Phase::Handshake {
                let Some(bytes) = next_chunk(&mut peer.inbuf, &mut data, wire::HANDSHAKE_LEN)
                else {
                    break;
                };
                match wire::Handshake::decode(&bytes) {
                    Ok(hs) => self.on_handshake(id, hs),
                    Err(e) => return self.close(id, DisconnectReason::BadHandshake(e)),
                }
                continue;
            }
            if let Some(len) = wire::pending_piece(&peer.inbuf, max_len)
                && data.len() >= len
            {
                peer.inbuf.clear();
                let piece = data.split_to(len);
                self.on_message(id, Message::Live(LiveMessage::Piece(piece)));
                continue;
            }
            // Measure the frame where it starts: in the buffer if part of it is there.
            if !peer.inbuf.is_empty() && peer.inbuf.len() < 4 {
                let take = (4 - peer.inbuf.len()).min(data.len());
                peer.inbuf.extend_from_slice(&data.split_to(take));
            }
            let start = if peer.inbuf.is_empty() {
                &data[..]
            } else {
                &peer.inbuf[..]
            };
            let used = match wire::frame_size(start, max_len) {
                Ok(used) => used,
                Err(DecodeError::NeedMore) => {
                    peer.inbuf.extend_from_slice(&data);
                    break;
                }
                Err(e) => return self.close(id, DisconnectReason::Protocol(e)),
            };
            let Some(frame) = next_chunk(&mut peer.inbuf, &mut data, used) else {
                break;
            };
            match wire::decode_frame(&frame) {
                Ok(msg) => self.on_message(id, msg),
                Err(e) => return self.close(id, DisconnectReason::Protocol(e)),
            }
        }
    }

    fn on_handshake(&mut self, id: PeerId, hs: wire::Handshake) {
        if hs.info_hash != self.config.info_hash.0 {
            return self.close(id, DisconnectReason::OtherTorrent);
        }
        let (addr, outbound) = {
            let p = self.peers.get(id).unwrap();
            (p.addr, p.outbound)
        };
        if hs.peer_id == self.config.peer_id {
            self.addrs.mark_own(addr);
            return self.close(id, DisconnectReason::Ourselves);
        }
        let ip = addr.ip();
        if self.addrs.is_banned_id(ip, &hs.peer_id) {
            return self.close(id, DisconnectReason::Banned);
        }
        if !hs.extensions {
            return self.close(id, DisconnectReason::NoExtensionProtocol);
        }
        // One connection per peer: keep the one opened by the peer with the smaller id, a rule
        // both sides agree on without talking.
        let opener = |outbound: bool| {
            if outbound {
                self.config.peer_id
            } else {
                hs.peer_id
            }
        };
        let other = self
            .peers
            .iter()
            .find(|(o, p)| *o != id && p.remote_id == Some(hs.peer_id) && p.addr.ip() == ip)
            .map(|(o, p)| (o, p.outbound));
        if let Some((other, other_outbound)) = other {
            if opener(outbound) < opener(other_outbound) {
                self.close(other, DisconnectReason::Duplicate);
            } else {
                return self.close(id, DisconnectReason::Duplicate);
            }
        }
        let p = self.peers.get_mut(id).unwrap();
        p.remote_id = Some(hs.peer_id);
        p.phase = Phase::Extended;
    }

    fn on_message(&mut self, id: PeerId, msg: Message) {
        let p = self.peers.get_mut(id).unwrap();
        // Heard is a whole message, not a byte: a peer that trickles one message out a byte
        // at a time (slowloris) holds its connection no longer than a silent one.
        p.last_heard = self.now;
        match (p.phase, msg) {
            (_, Message::KeepAlive) => {}
            (Phase::Extended, Message::ExtHandshake(ext)) => self.on_ext_handshake(id, ext),
            (Phase::Extended, _) => self.close(id, DisconnectReason::EarlyMessage),
            (Phase::Active, Message::ExtHandshake(_)) => {} // updates are allowed and ignored
            (Phase::Active, Message::Choke) => {
                p.peer_choking = true;
                self.download.requests_ended(id, p);
            }
            (Phase::Active, Message::Unchoke) => {
                p.peer_choking = false;
                self.download.need_pick();
            }
            (Phase::Active, Message::Interested) => {
                p.peer_interested = true;
                self.rechoke_if_slot_free(id);
            }
            (Phase::Active, Message::NotInterested) => p.peer_interested = false,
            (Phase::Active, Message::Live(live)) => self.on_live(id, live),
            (Phase::Active, Message::Pex(pex)) => {
                let heard = p.pex.heard(self.now, pex);
                for addr in heard {
                    if !self.addrs.contains(&addr) && self.addrs.add(addr) {
                        self.stats.pex_addrs += 1;
                    }
                }
            }
            (Phase::Handshake, _) => unreachable!("the handshake is decoded separately"),
        }
    }

    fn on_ext_handshake(&mut self, id: PeerId, ext: ExtHandshake) {
        let Some(live_id) = ext.live_id else {
            return self.close(id, DisconnectReason::NoLiveExtension);
        };
        let p = self.peers.get_mut(id).unwrap();
        p.live_id = live_id;
        p.pex.start(ext.pex_id, self.now);
        p.is_source = ext.role == Some(Role::Injector);
        p.is_seed = ext.role == Some(Role::Seed);
        if let Some(port) = ext.listen_port
            && port != 0
        {
            let listen = SocketAddr::new(p.addr.ip(), port);
            p.listen_addr = Some(listen);
            p.trusted |= self.config.trusted.contains(&listen);
            if self.addrs.is_banned_addr(&listen) {
                return self.close(id, DisconnectReason::Banned);
            }
        }
        p.phase = Phase::Active;
        if let Some(listen) = p.listen_addr {
            self.addrs.mark_connected(listen);
        }
        if self.config.role != Role::Injector {
            wire::encode(&Message::Interested, 0, p.outbox.buf());
        }
        // Tell the new peer what we hold (the injector only what it has let go of).
        let entries: Vec<HaveEntry> = self
            .store
            .iter()
            .filter(|p| self.announceable(p))
            .map(have_entry)
            .collect();
        self.send_have(id, entries);
        self.rechoke_if_slot_free(id);
    }

    fn on_live(&mut self, id: PeerId, msg: LiveMessage) {
        let now = self.now;
        match msg {
            LiveMessage::Have {
                window_start,
                entries,
            } => {
                // Claims beyond what the injector can have made are lies: never taken, and
                // counted against the peer.
                let horizon = (self.known).horizon(now, self.config.window.as_micros() as u64);
                let (entries, lies): (Vec<HaveEntry>, Vec<HaveEntry>) =
                    (entries.into_iter()).partition(|e| horizon.is_none_or(|h| e.seq <= h));
                if !lies.is_empty() {
                    self.stats.claims_refused += lies.len() as u64;
                    let p = self.peers.get_mut(id).unwrap();
                    if p.standing.lied(lies.len() as u32) {
                        let claims = p.standing.implausible;
                        return self.ban(id, DisconnectReason::ImplausibleClaims { claims });
                    }
                }
                // Saying of a verified piece what it is not proves a lie.
                if let Some(e) = entries.iter().find(|e| self.known.contradicts(e)) {
                    let seq = e.seq;
                    return self.ban(id, DisconnectReason::FalseClaim { seq });
                }
                // How soon this peer tells of new pieces: its newest entry against when we
                // first heard of that piece (from anyone).
                if self.push.is_on()
                    && let Some(newest) = entries.iter().map(|e| e.seq).max()
                {
                    let heard = self.known.get(newest).map(|m| m.first_heard);
                    let first = self.push.tell_lag(id).is_none();
                    self.push
                        .told(id, heard.map_or(Duration::ZERO, |t| now - t));
                    if first && self.push.orphans().next().is_some() {
                        self.timers.set_earliest(Timer::Push, now);
                    }
                }
                let seqs = entries.iter().map(|e| e.seq);
                self.peers.learn_haves(id, window_start, seqs);
                self.drop_announced_requests(id);
                // The injector makes every piece: peers' claims teach it nothing.
                if self.config.role == Role::Injector {
                    return;
                }
                // First, so that a seed's older piece told late lowers the floor below.
                self.seed_backfill(&entries);
                let floor = self.window_floor();
                // Only what the peer table kept of the claims (bounded per peer).
                let Some(p) = self.peers.get(id) else { return };
                for e in entries.iter().filter(|e| e.seq >= floor && p.has(e.seq)) {
                    self.known.learn(e, id, now);
                    if !self.store.contains(e.seq) && !self.download.is_inflight(e.seq) {
                        self.download.need_pick();
                    }
                }
            }
            LiveMessage::Request { seq } => self.on_request(id, seq),
            LiveMessage::Cancel { seq } => self.on_cancel(id, seq),
            LiveMessage::Reject { seq } => {
                let p = self.peers.get_mut(id).unwrap();
                if let Some(sent) = self.download.request_ended(id, p, seq) {
                    self.stats.requests_refused += 1;
                    // A refusal costs the requester the time it waited: count it as that slow.
                    p.note_rtt(now.saturating_duration_since(sent.at).as_micros() as u64);
                    p.refuse(seq, now);
                    p.standing.refused();
                    self.timers
                        .set_earliest(Timer::Retry, now + peer::REFUSE_FOR);
                }
            }
            LiveMessage::Piece(piece) => self.on_piece(id, piece),
            LiveMessage::Subscribe(sub) => self.on_subscribe(id, sub),
            LiveMessage::Unsubscribe(sub) => self.on_unsubscribe(id, sub),
        }
    }

    fn on_piece(&mut self, id: PeerId, wire_bytes: Bytes) {
        let now = self.now;
        let header = match SignedPiece::check_structure(&wire_bytes, self.config.max_payload) {
            Ok(h) => h,
            Err(e) => return self.ban(id, DisconnectReason::MalformedPiece(e)),
        };
        let p = self.peers.get_mut(id).unwrap();
        let mut pushed = false;
        match self.download.request_ended(id, p, header.seq) {
            Some(sent) => p.note_rtt(now.saturating_duration_since(sent.at).as_micros() as u64),
            // Asked for, then given up on as too slow: still worth having if it is needed.
            None if p.refused.contains_key(&header.seq) => {}
            // Our parent for its substream pushes it unasked.
            None if self.push.is_parent_of(id, header.seq) => pushed = true,
            None => {
                self.stats.unrequested += 1;
                return; // never asked for: ignore it
            }
        }
        // A piece came: whether asked of this peer or not, there may be room to ask for more.
        self.download.need_pick();
        if self.store.contains(header.seq) || header.seq < self.window_floor() {
            self.stats.duplicates += 1;
            return;
        }
        let c = &self.config;
        let verdict = match &c.verify_memo {
            Some(memo) => memo.verify(wire_bytes, &c.public_key, &c.info_hash, c.max_payload),
            None => SignedPiece::verify(wire_bytes, &c.public_key, &c.info_hash, c.max_payload),
        };
        let piece = match verdict {
            Ok(piece) => piece,
            Err(error) => {
                self.stats.pieces_rejected += 1;
                let seq = header.seq;
                return self.ban(id, DisconnectReason::BadPiece { seq, error });
            }
        };
        if self.config.record_arrivals {
            let timestamp_us = header.timestamp_us;
            (self.arrivals).push(Arrival {
                seq: header.seq,
                timestamp_us,
                pushed,
            });
        }
        if pushed {
            let heard = self.known.get(header.seq).map(|m| m.first_heard);
            (self.push).pushed(header.seq, heard.map_or(Duration::ZERO, |t| now - t));
        }
        let p = self.peers.get_mut(id).unwrap();
        p.standing.delivered();
        p.down_recent += header.payload_len as u64;
        self.stats.pieces_received += 1;
        self.stats.bytes_down += header.payload_len as u64;
        if p.is_source {
            self.stats.bytes_down_injector += header.payload_len as u64;
        }
        self.accept_piece(piece);
    }

    /// A verified piece: store it, tell everyone who lacks it, drop duplicate requests.
    pub(super) fn accept_piece(&mut self, piece: SignedPiece) {
        let h = *piece.header();
        let liars = self.known.confirm(h.seq, h.timestamp_us, h.flags, self.now);
        if h.end_of_stream() {
            self.eos_seq = Some(h.seq);
        }
        let entry = have_entry(&piece);
        self.store.insert(piece);
        self.push_to_children(h.seq);
        let mut tell = Vec::new();
        for (pid, p) in self.peers.iter_mut() {
            // Nobody needs to be asked for it any more.
            if self.download.request_ended(pid, p, h.seq).is_some() {
                send_live(p, LiveMessage::Cancel { seq: h.seq });
            }
            if p.is_active() && !p.has(h.seq) {
                tell.push(pid);
            }
        }
        for pid in tell {
            self.send_have(pid, vec![entry]);
        }
        // Its request, if any, ended above with the peer it went to.
        self.download.need_pick();
        self.evict();
        for liar in liars.into_iter().flatten() {
            let seq = h.seq;
            self.ban(liar, DisconnectReason::FalseClaim { seq });
        }
    }

    /// Injector: a piece it just cut and signed.
    pub(super) fn add_local_piece(&mut self, piece: SignedPiece) {
        let h = *piece.header();
        self.stats.pieces_emitted += 1;
        self.known.made(h.seq, h.timestamp_us, h.flags, self.now);
        if h.end_of_stream() {
            self.eos_seq = Some(h.seq);
        }
        self.store.insert(piece);
        self.evict();
        self.push_to_children(h.seq);
        let pushed = self
            .push
            .index(h.seq)
            .is_some_and(|i| self.push.children_of(i) > 0);
        // Unless it is pushed, feed one peer at once, preferring trusted seedboxes, then
        // seedboxes; the rest hear about the piece after SOURCE_HOLD, from the swarm or us.
        if !pushed && let Some(target) = self.fanout_target(h.seq) {
            let entry = HaveEntry {
                seq: h.seq,
                timestamp_us: h.timestamp_us,
                flags: h.flags,
            };
            self.send_have(target, vec![entry]);
        }
    }
}

/// The next `len` bytes of a connection, made of what `buf` holds and then `data`: taken
/// from `data` without a copy when `buf` is empty; else copied into `buf`, and `None`
/// (all of `data` kept in `buf`) while they are not all there yet.
fn next_chunk(buf: &mut BytesMut, data: &mut Bytes, len: usize) -> Option<Bytes> {
    if buf.is_empty() && data.len() >= len {
        return Some(data.split_to(len));
    }
    let take = (len - buf.len()).min(data.len());
    buf.extend_from_slice(&data.split_to(take));
    (buf.len() == len).then(|| buf.split().freeze())
}
