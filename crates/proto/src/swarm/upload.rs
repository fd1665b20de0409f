//! Giving pieces: serving requests under the upload limit, choking, and what the injector
//! announces to whom.

use std::time::Instant;

use super::*;

impl Swarm {
    /// Sends queued pieces, round-robin over peers, as the upload limit allows.
    pub(super) fn serve_requests(&mut self, now: Instant) {
        let mut ids: Vec<PeerId> = self.peers.keys().copied().collect();
        ids.sort_unstable();
        // Refuse what waited too long: the requester is better off asking elsewhere.
        for &id in &ids {
            let p = self.peers.get_mut(&id).unwrap();
            while let Some(&(seq, at)) = p.queue.front() {
                if now < at + MAX_QUEUE_WAIT && self.store.contains(seq) {
                    break;
                }
                p.queue.pop_front();
                send_live(p, LiveMessage::Reject { seq });
            }
        }
        if ids.is_empty() {
            return;
        }
        // Trusted seedboxes are served first: what they get, they pass on to many.
        ids.sort_by_key(|id| !self.peers[id].trusted);
        let trusted = ids.iter().take_while(|id| self.peers[*id].trusted).count();
        loop {
            let mut sent_any = false;
            for i in 0..ids.len() {
                let id = if i < trusted {
                    ids[i]
                } else {
                    let others = ids.len() - trusted;
                    ids[trusted + (self.serve_turn + i - trusted) % others]
                };
                let p = self.peers.get_mut(&id).unwrap();
                let Some(&(seq, _)) = p.queue.front() else {
                    continue;
                };
                let Some(piece) = self.store.get(seq) else {
                    continue;
                };
                let len = piece.header().payload_len as u64;
                if let Some(bucket) = &mut self.bucket
                    && !bucket.try_take(len, now)
                {
                    return;
                }
                p.queue.pop_front();
                p.up_recent += len;
                send_live(p, LiveMessage::Piece(piece.wire().clone()));
                self.stats.bytes_up += len;
                self.stats.pieces_sent += 1;
                if i >= trusted {
                    self.serve_turn = (self.serve_turn + i - trusted + 1) % (ids.len() - trusted);
                }
                sent_any = true;
                break;
            }
            if !sent_any {
                return;
            }
        }
    }

    pub(super) fn rechoke(&mut self, now: Instant) {
        self.next_rechoke = now + RECHOKE;
        self.rechokes += 1;
        if self.rechokes % OPTIMISTIC_EVERY == 1 || self.optimistic.is_none() {
            let candidates: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.is_active() && p.peer_interested && p.am_choking)
                .map(|(&id, _)| id)
                .collect();
            if !candidates.is_empty() {
                use rand::Rng;
                self.optimistic = Some(candidates[self.rng.random_range(0..candidates.len())]);
            }
        }
        let chosen =
            choker::choose_unchoked(&self.peers, self.config.upload_slots, self.optimistic);
        for (id, p) in self.peers.iter_mut() {
            let unchoke = chosen.contains(id);
            if unchoke == p.am_choking && p.is_active() {
                p.am_choking = !unchoke;
                let msg = if unchoke {
                    Message::Unchoke
                } else {
                    Message::Choke
                };
                wire::encode(&msg, 0, &mut p.outbox);
                if !unchoke {
                    p.queue.clear(); // BEP 3: choking discards the peer's requests
                }
            }
            p.down_recent = 0;
            p.up_recent = 0;
        }
    }

    /// A newly interested peer is unchoked at once while slots are free; otherwise it waits
    /// for the next rechoke.
    pub(super) fn rechoke_if_slot_free(&mut self, id: PeerId) {
        let unchoked = self.peers.values().filter(|p| !p.am_choking).count();
        let p = self.peers.get_mut(&id).unwrap();
        if p.is_active()
            && p.am_choking
            && (p.trusted || (p.peer_interested && unchoked < self.config.upload_slots))
        {
            p.am_choking = false;
            wire::encode(&Message::Unchoke, 0, &mut p.outbox);
        }
    }

    /// Whether we may tell peers we hold this piece. The injector waits SOURCE_HOLD after
    /// making a piece, so that the swarm, not the injector, carries the copies.
    /// If the peer it fed first has not even asked for the piece after FANOUT_GRACE (it left,
    /// or it keeps what it is given to itself), everyone hears of it then.
    pub(super) fn announceable(&self, piece: &SignedPiece, now: Instant) -> bool {
        if self.config.role != Role::Injector {
            return true;
        }
        let hold = if self.asked.contains(&piece.seq()) {
            SOURCE_HOLD
        } else {
            FANOUT_GRACE
        };
        self.known
            .get(piece.seq())
            .is_some_and(|m| now >= m.first_heard + hold)
    }

    /// Injector: tell every peer about pieces it has held for SOURCE_HOLD, so nobody misses a
    /// piece the swarm failed to spread.
    pub(super) fn announce_held(&mut self, now: Instant) {
        self.next_announce = now + ANNOUNCE_TICK;
        let ready: Vec<HaveEntry> = self
            .store
            .iter()
            .filter(|p| self.announceable(p, now))
            .map(have_entry)
            .collect();
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let p = &self.peers[&id];
            if !p.is_active() {
                continue;
            }
            let entries: Vec<HaveEntry> = ready
                .iter()
                .filter(|e| !p.told.contains(&e.seq) && !p.haves.contains(&e.seq))
                .copied()
                .collect();
            if !entries.is_empty() {
                self.send_have(id, entries);
            }
        }
    }

    pub(super) fn fanout_target(&mut self) -> Option<PeerId> {
        let mut active: Vec<(&PeerId, &Peer)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_active() && !p.am_choking)
            .collect();
        active.sort_by_key(|(id, _)| **id);
        let class: Vec<PeerId> = if active.iter().any(|(_, p)| p.trusted) {
            active
                .iter()
                .filter(|(_, p)| p.trusted)
                .map(|(id, _)| **id)
                .collect()
        } else if active.iter().any(|(_, p)| p.is_seed) {
            active
                .iter()
                .filter(|(_, p)| p.is_seed)
                .map(|(id, _)| **id)
                .collect()
        } else {
            active.iter().map(|(id, _)| **id).collect()
        };
        if class.is_empty() {
            return None;
        }
        self.fanout_turn = self.fanout_turn.wrapping_add(1);
        Some(class[self.fanout_turn % class.len()])
    }

    pub(super) fn send_have(&mut self, id: PeerId, mut entries: Vec<HaveEntry>) {
        let window_start = self.store.first_seq().unwrap_or(0);
        let p = self.peers.get_mut(&id).unwrap();
        entries.retain(|e| p.told.insert(e.seq));
        if entries.is_empty() {
            return;
        }
        for chunk in entries.chunks(wire::MAX_HAVE_ENTRIES) {
            send_live(
                p,
                LiveMessage::Have {
                    window_start,
                    entries: chunk.to_vec(),
                },
            );
        }
    }
}
