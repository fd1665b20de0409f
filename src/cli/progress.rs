//! A receiver that cannot make progress says why: in its log, in `/status` (`waiting_for`)
//! and, where waiting cannot help, with a final error.
//!
//! The one case where waiting cannot help is a latency the swarm never holds: the receiver
//! hooks in at a keyframe `latency` behind the newest piece, so once pieces are announced it
//! hooks in at the latest `latency` later (the stream grows by that much meanwhile). Still
//! joining [`HOOK_SLACK`] after that, it never will (the stream ended younger than the
//! latency, or peers keep less of it): the receiver exits with an error naming the setting.
//! No peers, or peers with no pieces, can change (the injector may start later): those are
//! reported and waited for.

use std::time::{Duration, Instant};

use crate::net::node::NodeStatus;
use crate::net::tracker::Health;
use crate::settings::Origin;
use crate::swarm::State;

/// How long past its latency a receiver that sees pieces may stay joining.
pub const HOOK_SLACK: Duration = Duration::from_secs(5);

/// What the receiver knows about how it finds peers, for the "no peers" message.
pub struct Watch {
    pub latency: Duration,
    pub latency_origin: Origin,
    pub trackers: usize,
    pub static_peers: usize,
    /// What each tracker last said (filled in by the announcer).
    pub tracker_health: Health,
    /// When a piece was first announced to us (the hook-in clock starts there).
    first_piece_at: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Making progress, or waiting for something that is on its way.
    Fine,
    /// Waiting for something that may never come; the text says what.
    Waiting(String),
    /// Waiting cannot help; the text is the final error.
    GiveUp(String),
}

impl Watch {
    pub fn new(
        latency: Duration,
        latency_origin: Origin,
        trackers: usize,
        static_peers: usize,
        tracker_health: Health,
    ) -> Self {
        Watch {
            latency,
            latency_origin,
            trackers,
            static_peers,
            tracker_health,
            first_piece_at: None,
        }
    }

    /// Judges one status; call it with each status the node publishes.
    pub fn observe(&mut self, now: Instant, st: &NodeStatus) -> Verdict {
        let s = &st.swarm;
        if s.newest_seq.is_some() || s.told_seq.is_some() {
            self.first_piece_at.get_or_insert(now);
        }
        let latency_ms = self.latency.as_millis();
        match s.state {
            State::Joining | State::Stalled if s.peers == 0 => {
                let how = match (self.trackers, self.static_peers) {
                    (0, 0) => format!(
                        "no tracker and no --peer: only peers that connect to {} can be found",
                        st.listen
                    ),
                    (_, p) => self.trackers_said(p),
                };
                Verdict::Waiting(format!("no peers: {how}"))
            }
            State::Joining => match self.first_piece_at {
                None => Verdict::Waiting(format!(
                    "{} peer{} connected, none has announced a piece yet (is the injector running?)",
                    s.peers,
                    if s.peers == 1 { "" } else { "s" }
                )),
                Some(at) => {
                    let waited = now.saturating_duration_since(at);
                    if waited > self.latency + HOOK_SLACK {
                        Verdict::GiveUp(format!(
                            "no start {} s after the first piece was announced: the swarm does not \
                             hold {} {latency_ms} ms of stream behind its newest piece (the stream \
                             is younger than that, or ended); lower the latency",
                            waited.as_secs(),
                            self.latency_origin
                        ))
                    } else {
                        Verdict::Waiting(format!(
                            "waiting for {latency_ms} ms of stream behind the newest piece \
                             ({}); the swarm holds less so far",
                            self.latency_origin
                        ))
                    }
                }
            },
            _ => Verdict::Fine,
        }
    }

    /// What each tracker last said, and the --peer addresses: why there are no peers.
    fn trackers_said(&self, static_peers: usize) -> String {
        let health = self
            .tracker_health
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut said: Vec<String> = (health.iter())
            .map(|(url, r)| match r {
                Ok(n) => format!("tracker {url} named {n} peer{}", plural(*n)),
                Err(e) => format!("tracker {url} failed: {e}"),
            })
            .collect();
        let silent = self.trackers.saturating_sub(health.len());
        if silent > 0 {
            said.push(format!(
                "{silent} tracker{} not answered yet",
                plural(silent)
            ));
        }
        if self.trackers > 0 && silent == 0 && health.values().all(Result::is_err) {
            said.insert(0, "no tracker reachable".into());
        }
        said.push(match static_peers {
            0 => "no --peer".to_string(),
            1 => "1 --peer address not answering".to_string(),
            p => format!("{p} --peer addresses not answering"),
        });
        said.join("; ")
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: State, peers: usize, newest: Option<u64>) -> NodeStatus {
        let swarm = crate::swarm::SwarmStatus {
            role: crate::swarm::Role::Receiver,
            state,
            infohash: String::new(),
            peers,
            newest_seq: newest,
            told_seq: None,
            hook_seq: None,
            output_seq: None,
            output_timestamp_us: None,
            pieces_received: 0,
            pieces_missed: 0,
            pieces_late: 0,
            pieces_rejected: 0,
            pieces_emitted: 0,
            pieces_held: 0,
            bytes_down: 0,
            bytes_down_injector: 0,
            bytes_up: 0,
            duplicates: 0,
            request_timeouts: 0,
            request_timeouts_at_start: 0,
            requests_refused: 0,
            claims_refused: 0,
            peers_benched: 0,
            peers_banned: 0,
            addrs_known: 0,
            pex_addrs: 0,
            push: Default::default(),
            startup_ms: None,
            first_told_ms: None,
            hooked_ms: None,
            output_span_ms: None,
            continuity: 1.0,
            ended: false,
        };
        NodeStatus {
            swarm,
            lag_ms: None,
            bytes_in: None,
            bytes_dropped: None,
            output_dropped: 0,
            listen: "127.0.0.1:6881".into(),
        }
    }

    #[test]
    fn impossible_latency_gives_up_after_latency_and_slack() {
        let health = Health::default();
        let mut w = Watch::new(
            Duration::from_secs(8),
            Origin::Flag("--latency"),
            2,
            0,
            health.clone(),
        );
        let t0 = Instant::now();
        let mut no_peers = |h: Option<(&str, Result<usize, String>)>| {
            if let Some((url, r)) = h {
                health.lock().unwrap().insert(url.into(), r);
            }
            match w.observe(t0, &status(State::Joining, 0, None)) {
                Verdict::Waiting(m) => m,
                v => panic!("{v:?}"),
            }
        };
        assert_eq!(
            no_peers(None),
            "no peers: 2 trackers not answered yet; no --peer"
        );
        assert_eq!(
            no_peers(Some(("http://a/announce", Err("cannot connect".into())))),
            "no peers: tracker http://a/announce failed: cannot connect; 1 tracker not answered \
             yet; no --peer"
        );
        assert_eq!(
            no_peers(Some((
                "http://b/announce",
                Err("tracker answered HTTP 404".into())
            ))),
            "no peers: no tracker reachable; tracker http://a/announce failed: cannot connect; \
             tracker http://b/announce failed: tracker answered HTTP 404; no --peer"
        );
        assert!(
            no_peers(Some(("http://b/announce", Ok(0))))
                .ends_with("tracker http://b/announce named 0 peers; no --peer")
        );
        assert!(
            matches!(w.observe(t0, &status(State::Joining, 2, None)), Verdict::Waiting(m) if m.contains("none has announced a piece"))
        );
        let v = w.observe(t0, &status(State::Joining, 2, Some(7)));
        assert!(
            matches!(&v, Verdict::Waiting(m) if m.contains("8000 ms") && m.contains("--latency")),
            "{v:?}"
        );
        let v = w.observe(
            t0 + Duration::from_secs(13),
            &status(State::Joining, 2, Some(9)),
        );
        assert!(matches!(v, Verdict::Waiting(_)), "{v:?}");
        let v = w.observe(
            t0 + Duration::from_secs(14),
            &status(State::Joining, 2, Some(9)),
        );
        assert_eq!(
            v,
            Verdict::GiveUp(
                "no start 14 s after the first piece was announced: the swarm does not hold \
                 --latency 8000 ms of stream behind its newest piece (the stream is younger than \
                 that, or ended); lower the latency"
                    .into()
            )
        );
        assert_eq!(
            w.observe(
                t0 + Duration::from_secs(99),
                &status(State::Playing, 2, Some(99))
            ),
            Verdict::Fine
        );
    }
}
