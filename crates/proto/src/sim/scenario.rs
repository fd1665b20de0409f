//! Scenarios: an audience described by distributions (round trips, upload, loss, peers that
//! cannot be dialled, churn), turned into a seeded [`Sim`] and, after the run, a [`Report`]
//! with per-peer figures and a summary. `nordlys simulate SCENARIO.toml` reads one.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{
    Congestion, DELAY_BUCKET, Hostile, MISS_BUCKETS, NodeSpec, Sim, StreamSpec, TrackerSpec,
};
use crate::swarm::Role;

/// Every knob, with the defaults of a small concert. Ranges are `[low, high]`, drawn
/// uniformly per peer.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub seed: u64,
    /// Length of the stream; the run goes on a few seconds after it, for the last pieces.
    pub duration_s: f64,
    pub bitrate_kbit: u32,
    /// MPEG-TS bytes per piece (whole 188-byte packets).
    pub piece_bytes: usize,
    pub keyframe_every_s: f64,
    /// Receivers' target latency (`--latency`).
    pub latency_ms: u64,
    pub receivers: usize,
    /// Receivers join spread evenly over `join_over_s` from `join_from_s` on (a flash crowd
    /// into a running stream).
    pub join_from_s: f64,
    pub join_over_s: f64,
    /// Round trip between two peers (each peer's access network takes half of it).
    pub rtt_ms: [f64; 2],
    /// TCP segment loss on every receiver's access link.
    pub loss: f64,
    /// Every node's TCP congestion control: `"cubic"` (the kernel's usual default) or
    /// `"bbr"` (what nordlys asks the kernel for; see README, "Loss and BBR").
    pub congestion: Congestion,
    /// Share of receivers that cannot be dialled (they only dial out).
    pub not_dialable: f64,
    /// Share of receivers with no upload at all.
    pub no_upload: f64,
    /// Mean upload of all receivers, in multiples of the bitrate (those with none count 0).
    pub upload_x: f64,
    /// Share of receivers that leave before the end, at a uniformly drawn time.
    pub churn: f64,
    pub seedboxes: usize,
    pub seedbox_upload_x: f64,
    /// The injector's upload cap, in multiples of the bitrate.
    pub injector_upload_x: f64,
    /// The tracker's answer: peers at most, how soon after a start, how often again.
    pub tracker_sample: usize,
    pub tracker_delay_ms: u64,
    pub reannounce_s: u64,
    /// Hostile peers, as a share of the whole audience (honest receivers and hostile peers
    /// together): 0.3 beside 200 receivers adds 86. They join as receivers do, of the kinds
    /// in `hostile_kinds` in turn, and are drawn from a random stream of their own, so the
    /// honest receivers are the same as in the run without them.
    pub hostile: f64,
    pub hostile_kinds: Vec<Hostile>,
    /// Push the stream along this many substreams (`--substreams`); 0: pull only.
    pub substreams: u8,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 1,
            duration_s: 60.0,
            bitrate_kbit: 3000,
            piece_bytes: crate::torrent::DEFAULT_PIECE_LENGTH as usize,
            keyframe_every_s: 1.0,
            latency_ms: 2000,
            receivers: 200,
            join_from_s: 5.0,
            join_over_s: 10.0,
            rtt_ms: [20.0, 250.0],
            loss: 0.0,
            congestion: Congestion::Cubic,
            not_dialable: 0.0,
            no_upload: 0.0,
            upload_x: 1.5,
            churn: 0.0,
            seedboxes: 2,
            seedbox_upload_x: 10.0,
            injector_upload_x: 3.0,
            tracker_sample: 50,
            tracker_delay_ms: 200,
            reannounce_s: 30,
            hostile: 0.0,
            hostile_kinds: Hostile::ALL.to_vec(),
            substreams: 0,
        }
    }
}

/// Why a scenario cannot run.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    #[error("{0}")]
    Invalid(&'static str),
}

/// A seedbox's (and the injector's) access network: a data centre.
const SERVER_ONE_WAY: Duration = Duration::from_millis(5);
/// Control messages still leave a peer with no upload for pieces.
const CONTROL_RATE: u64 = 8_000;
/// A node's upload: the core paces piece payload to `bytes_per_sec` (its `--upload-limit`),
/// on a link a quarter faster, so that what it sends does not queue up in the link and
/// delay its requests (as a client that limits itself below its line does).
fn set_upload(n: &mut NodeSpec, bytes_per_sec: f64) {
    n.upload_limit = Some(bytes_per_sec as u64);
    n.link_rate = Some((bytes_per_sec * 1.25) as u64 + CONTROL_RATE);
}

/// A node that uploads nothing: its link carries only control messages. Honest receivers
/// without upload and leeches share it, so that the leech is an exact control.
fn set_no_upload(n: &mut NodeSpec) {
    n.upload_limit = Some(1);
    n.link_rate = Some(CONTROL_RATE);
}

/// Mixed into the seed for the hostile peers' draws.
const HOSTILE_SEED: u64 = 0x0068_6f73_7469_6c65;

/// How long the run goes on after the stream's last piece.
const TAIL: Duration = Duration::from_secs(5);

impl Scenario {
    fn check(&self) -> Result<(), ScenarioError> {
        use ScenarioError::Invalid;
        let share = |x: f64| (0.0..=1.0).contains(&x);
        if !(self.duration_s > 0.0 && self.duration_s <= 24.0 * 3600.0) {
            return Err(Invalid("duration_s must be above 0 and at most a day"));
        }
        if self.bitrate_kbit == 0 || self.piece_bytes < 188 * 3 || self.piece_bytes > 1 << 20 {
            return Err(Invalid(
                "bitrate_kbit must be above 0 and piece_bytes 564 to 1 MiB",
            ));
        }
        if self.receivers > 100_000 || self.seedboxes > 1000 {
            return Err(Invalid("at most 100,000 receivers and 1000 seedboxes"));
        }
        if ![self.loss, self.not_dialable, self.no_upload, self.churn]
            .into_iter()
            .all(share)
            || self.loss >= 0.5
        {
            return Err(Invalid(
                "loss (below 0.5), not_dialable, no_upload and churn are shares from 0 to 1",
            ));
        }
        let [lo, hi] = self.rtt_ms;
        if !(lo >= 0.0 && hi >= lo && hi <= 10_000.0) {
            return Err(Invalid("rtt_ms must be [low, high] within 0 to 10000"));
        }
        let positive = [
            self.upload_x,
            self.seedbox_upload_x,
            self.injector_upload_x,
            self.keyframe_every_s,
        ];
        let times_ok = self.join_over_s >= 0.0 && self.join_from_s >= 0.0;
        if !(positive.into_iter().all(|x| x.is_finite() && x > 0.0) && times_ok) {
            return Err(Invalid(
                "upload multiples and keyframe_every_s must be above 0, join_over_s not below",
            ));
        }
        if !(0.0..=0.9).contains(&self.hostile) || self.hostile_kinds.is_empty() {
            return Err(Invalid(
                "hostile is a share from 0 to 0.9, with at least one of hostile_kinds",
            ));
        }
        if self.substreams > crate::wire::MAX_SUBSTREAMS {
            return Err(Invalid("substreams must be at most 64"));
        }
        if self.tracker_sample == 0 || self.reannounce_s == 0 {
            return Err(Invalid("tracker_sample and reannounce_s must be above 0"));
        }
        Ok(())
    }

    pub fn bytes_per_sec(&self) -> f64 {
        self.bitrate_kbit as f64 * 1000.0 / 8.0
    }

    /// How long the run lasts in virtual time.
    pub fn run_time(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s) + TAIL
    }

    /// The seeded simulation: node 0 is the injector, then the seedboxes, then receivers.
    pub fn build(&self) -> Result<Sim, ScenarioError> {
        self.check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let rate = self.bytes_per_sec();
        let payload = self.piece_bytes / 188 * 188;
        let interval = Duration::from_secs_f64(payload as f64 / rate);
        let stream = StreamSpec {
            piece_payload: payload,
            piece_interval: interval,
            keyframe_every: (self.keyframe_every_s / interval.as_secs_f64())
                .round()
                .max(1.0) as u64,
            pieces: (self.duration_s / interval.as_secs_f64()).ceil() as u64,
            drop_seqs: Vec::new(),
        };
        let server = |role: Role, upload_x: f64| {
            let mut n = NodeSpec::new(role);
            n.one_way = Some(SERVER_ONE_WAY);
            set_upload(&mut n, upload_x * rate);
            n.congestion = self.congestion;
            n
        };
        let mut injector = server(Role::Injector, self.injector_upload_x);
        injector.trusts_seeds = true;
        let mut nodes = vec![injector];
        nodes.extend((0..self.seedboxes).map(|_| server(Role::Seed, self.seedbox_upload_x)));
        // Those with upload share the mean among themselves, spread ±50 %.
        let uploaders_x = self.upload_x / (1.0 - self.no_upload).max(1e-9);
        let end = Duration::from_secs_f64(self.duration_s);
        for k in 0..self.receivers {
            let mut n = NodeSpec::new(Role::Receiver);
            n.latency = Duration::from_millis(self.latency_ms);
            n.join_at = Duration::from_secs_f64(
                self.join_from_s + self.join_over_s * k as f64 / self.receivers.max(1) as f64,
            );
            let rtt = rng.random_range(self.rtt_ms[0]..=self.rtt_ms[1]);
            n.one_way = Some(Duration::from_secs_f64(rtt / 4000.0));
            n.loss = self.loss;
            n.congestion = self.congestion;
            n.dialable = rng.random::<f64>() >= self.not_dialable;
            if rng.random::<f64>() < self.no_upload {
                set_no_upload(&mut n);
            } else {
                set_upload(&mut n, uploaders_x * rng.random_range(0.5..=1.5) * rate);
            }
            if rng.random::<f64>() < self.churn && end > n.join_at {
                n.leave_at = Some(rng.random_range(n.join_at..end));
            }
            nodes.push(n);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ HOSTILE_SEED);
        let hostile = (self.receivers as f64 * self.hostile / (1.0 - self.hostile)).round();
        for k in 0..hostile as usize {
            let mut n = NodeSpec::new(Role::Receiver);
            n.hostile = Some(self.hostile_kinds[k % self.hostile_kinds.len()]);
            n.latency = Duration::from_millis(self.latency_ms);
            n.join_at =
                Duration::from_secs_f64(self.join_from_s + self.join_over_s * rng.random::<f64>());
            let rtt = rng.random_range(self.rtt_ms[0]..=self.rtt_ms[1]);
            n.one_way = Some(Duration::from_secs_f64(rtt / 4000.0));
            n.loss = self.loss;
            n.congestion = self.congestion;
            if n.hostile == Some(Hostile::Leech) {
                set_no_upload(&mut n);
            } else {
                set_upload(&mut n, self.upload_x * rate);
            }
            nodes.push(n);
        }
        let tracker = TrackerSpec {
            sample: self.tracker_sample,
            delay: Duration::from_millis(self.tracker_delay_ms),
            every: Duration::from_secs(self.reannounce_s),
        };
        Ok(
            Sim::new(self.seed, Duration::from_millis(10), stream, nodes)
                .with_tracker(tracker)
                .with_substreams(self.substreams)
                .record_output(false),
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PeerReport {
    pub node: usize,
    pub role: Role,
    /// A hostile peer, of this kind (left out of the summary).
    pub hostile: Option<Hostile>,
    pub dialable: bool,
    /// Upload capacity, in multiples of the bitrate.
    pub upload_x: f64,
    /// This peer's share of a round trip, doubled: its typical round trip to others.
    pub rtt_ms: f64,
    pub joined_s: f64,
    pub left_s: Option<f64>,
    pub continuity: f64,
    /// From joining to the first byte of stream out; to the first piece announcement heard;
    /// to the choice of the hook piece (the rest is the prebuffer); after a rehook, the last
    /// hook-in's.
    pub startup_ms: Option<u64>,
    pub first_told_ms: Option<u64>,
    pub hooked_ms: Option<u64>,
    /// Output delay behind the injector's clock: median and 95th percentile.
    pub delay_ms: Option<u64>,
    pub delay_p95_ms: Option<u64>,
    pub pieces_received: u64,
    pub pieces_missed: u64,
    /// Output after they were due (the player clock moved).
    pub pieces_late: u64,
    /// Requests given up on, refused by the peer asked, and pieces that came twice.
    pub request_timeouts: u64,
    /// Of those, the ones before its first output.
    pub request_timeouts_at_start: u64,
    pub requests_refused: u64,
    pub duplicates: u64,
    /// Connections it held at the end (or when it left).
    pub peers: usize,
    /// Peers this one banned, and HAVE entries it refused as impossible.
    pub peers_banned: u64,
    pub claims_refused: u64,
    /// Push along substreams: substreams it had a parent for at the end, pieces pushed to
    /// it, pieces of subscribed substreams it repaired by pull, subscriptions it made.
    pub parents: usize,
    pub pushes_received: u64,
    pub repairs: u64,
    pub parent_changes: u64,
    pub parent_refusals: u64,
    pub parents_replaced: u64,
    /// Pushes it gave up on as too late (its children's repair them).
    pub pushes_dropped: u64,
    /// Mean time a push waited at this node before it went (see `PushCounters`).
    pub push_wait_ms: Option<u64>,
    /// How old pieces were when they arrived (wall clock minus their timestamp), median:
    /// pushed ones and requested ones.
    pub arrival_pushed_ms: Option<u64>,
    pub arrival_pulled_ms: Option<u64>,
    /// How long its messages waited to leave it (uplink and TCP), median and 95th percentile.
    pub send_wait_ms: Option<u64>,
    pub send_wait_p95_ms: Option<u64>,
    /// Hops from the injector in each substream's tree at the end (`None`: no path).
    pub depths: Vec<Option<u32>>,
    /// Piece payload uploaded, in copies of the stream it saw.
    pub upload_copies: f64,
    /// Pieces its player skipped in the first 5 s after joining, 5-10 s, 10-15 s, and later.
    pub missed_since_join: [u32; MISS_BUCKETS],
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub receivers: usize,
    /// Receivers with continuity at least 0.995 / 0.999, as a share of all receivers.
    pub continuity_995: f64,
    pub continuity_999: f64,
    pub continuity_min: f64,
    pub continuity_mean: f64,
    /// Payload bytes the injector uploaded, in copies of the stream.
    pub origin_copies: f64,
    pub seedbox_copies: f64,
    /// What the receivers uploaded together, in copies of the stream.
    pub receiver_copies: f64,
    pub startup_median_ms: Option<u64>,
    pub startup_p95_ms: Option<u64>,
    /// The start's first steps, medians: first announcement heard, hook piece chosen.
    pub first_told_median_ms: Option<u64>,
    pub hooked_median_ms: Option<u64>,
    pub delay_median_ms: Option<u64>,
    pub delay_p95_ms: Option<u64>,
    /// Receivers that stayed at least STAY_TO_COUNT and never output anything.
    pub never_started: usize,
    /// Hostile peers in the run, and bans the honest nodes made.
    pub hostile: usize,
    pub bans: u64,
    /// Of the pieces receivers got, the share pushed to them (the rest were pulled).
    pub pushed_share: f64,
    /// Subscriptions per receiver, on average (the first for each substream included).
    pub parent_changes_mean: f64,
    /// Pieces the receivers' players skipped, by time since joining as in `PeerReport`.
    pub missed_since_join: [u64; MISS_BUCKETS],
    /// Requests a receiver left to time out before its first output, on average.
    pub request_timeouts_at_start_mean: f64,
    pub sim_seconds: f64,
    pub events: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub summary: Summary,
    pub peers: Vec<PeerReport>,
}

/// A receiver that left sooner than this after joining is not counted as never started.
const STAY_TO_COUNT: f64 = 3.0;

/// The value at quantile `q` of a sorted list.
fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied()
}

/// The delay at quantile `q` of a node's histogram, to the bucket's middle.
fn hist_quantile(counts: &[u32], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().map(|&c| c as u64).sum();
    if total == 0 {
        return None;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    let bucket = counts.iter().position(|&c| {
        seen += c as u64;
        seen >= want
    })?;
    Some(((bucket as f64 + 0.5) * DELAY_BUCKET.as_secs_f64() * 1000.0) as u64)
}

impl Scenario {
    /// The report of a finished run of this scenario.
    pub fn report(&self, sim: &Sim) -> Report {
        let rate = self.bytes_per_sec();
        let stream_bytes = |span: f64| (rate * span).max(1.0);
        let end_s = sim.elapsed().as_secs_f64().min(self.duration_s);
        let mut peers = Vec::new();
        for i in 0..sim.node_count() {
            let spec = sim.spec(i);
            let Some(st) = sim.status(i) else { continue };
            let joined_s = spec.join_at.as_secs_f64();
            let left_s = spec
                .leave_at
                .map(|t| t.as_secs_f64())
                .filter(|&t| t < end_s);
            let span = left_s.unwrap_or(end_s) - joined_s;
            let one_way_ms = spec.one_way.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            peers.push(PeerReport {
                node: i,
                role: spec.role,
                hostile: spec.hostile,
                dialable: spec.dialable,
                upload_x: spec.upload_limit.map_or(f64::INFINITY, |r| r as f64 / rate),
                rtt_ms: one_way_ms * 4.0,
                joined_s,
                left_s,
                continuity: st.continuity,
                startup_ms: st.startup_ms,
                first_told_ms: st.first_told_ms,
                hooked_ms: st.hooked_ms,
                delay_ms: hist_quantile(sim.delays(i), 0.5),
                delay_p95_ms: hist_quantile(sim.delays(i), 0.95),
                pieces_received: st.pieces_received,
                pieces_missed: st.pieces_missed,
                pieces_late: st.pieces_late,
                request_timeouts: st.request_timeouts,
                request_timeouts_at_start: st.request_timeouts_at_start,
                requests_refused: st.requests_refused,
                duplicates: st.duplicates,
                peers: st.peers,
                peers_banned: st.peers_banned,
                claims_refused: st.claims_refused,
                parents: st.push.parents,
                pushes_received: st.push.counters.pushes_received,
                repairs: st.push.counters.repairs,
                parent_changes: st.push.counters.parent_changes,
                parent_refusals: st.push.counters.parent_refusals,
                parents_replaced: st.push.counters.parents_replaced,
                pushes_dropped: st.push.counters.pushes_dropped,
                push_wait_ms: (st.push.counters.pushes_sent > 0)
                    .then(|| st.push.counters.push_wait_us / st.push.counters.pushes_sent / 1000),
                arrival_pushed_ms: hist_quantile(sim.arrival_ages(i, true), 0.5),
                arrival_pulled_ms: hist_quantile(sim.arrival_ages(i, false), 0.5),
                send_wait_ms: hist_quantile(sim.send_waits(i), 0.5),
                send_wait_p95_ms: hist_quantile(sim.send_waits(i), 0.95),
                depths: sim.depths(i),
                missed_since_join: sim.missed_since_join(i),
                upload_copies: st.bytes_up as f64 / stream_bytes(span),
            });
        }
        let receivers: Vec<&PeerReport> = (peers.iter())
            .filter(|p| p.role == Role::Receiver && p.hostile.is_none())
            .collect();
        let n = receivers.len().max(1) as f64;
        let share = |min: f64| receivers.iter().filter(|p| p.continuity >= min).count() as f64 / n;
        let mut startups: Vec<u64> = receivers.iter().filter_map(|p| p.startup_ms).collect();
        startups.sort_unstable();
        let median_of = |f: fn(&PeerReport) -> Option<u64>| {
            let mut v: Vec<u64> = receivers.iter().filter_map(|p| f(p)).collect();
            v.sort_unstable();
            quantile(&v, 0.5)
        };
        let mut delays: Vec<u64> = receivers.iter().filter_map(|p| p.delay_ms).collect();
        delays.sort_unstable();
        let copies = |role: Role| {
            (peers.iter())
                .filter(|p| p.role == role && p.hostile.is_none())
                .map(|p| p.upload_copies)
                .sum::<f64>()
        };
        let summary = Summary {
            receivers: receivers.len(),
            continuity_995: share(0.995),
            continuity_999: share(0.999),
            continuity_min: receivers.iter().map(|p| p.continuity).fold(1.0, f64::min),
            continuity_mean: receivers.iter().map(|p| p.continuity).sum::<f64>() / n,
            origin_copies: copies(Role::Injector),
            seedbox_copies: copies(Role::Seed),
            receiver_copies: copies(Role::Receiver),
            startup_median_ms: quantile(&startups, 0.5),
            startup_p95_ms: quantile(&startups, 0.95),
            first_told_median_ms: median_of(|p| p.first_told_ms),
            hooked_median_ms: median_of(|p| p.hooked_ms),
            delay_median_ms: quantile(&delays, 0.5),
            delay_p95_ms: quantile(&delays, 0.95),
            never_started: receivers
                .iter()
                .filter(|p| p.startup_ms.is_none())
                .filter(|p| p.left_s.unwrap_or(end_s) - p.joined_s >= STAY_TO_COUNT)
                .count(),
            hostile: peers.iter().filter(|p| p.hostile.is_some()).count(),
            bans: (peers.iter())
                .filter(|p| p.hostile.is_none())
                .map(|p| p.peers_banned)
                .sum(),
            pushed_share: receivers.iter().map(|p| p.pushes_received).sum::<u64>() as f64
                / (receivers.iter().map(|p| p.pieces_received).sum::<u64>()).max(1) as f64,
            parent_changes_mean: receivers.iter().map(|p| p.parent_changes).sum::<u64>() as f64 / n,
            request_timeouts_at_start_mean: (receivers.iter())
                .map(|p| p.request_timeouts_at_start)
                .sum::<u64>() as f64
                / n,
            missed_since_join: std::array::from_fn(|b| {
                receivers
                    .iter()
                    .map(|p| p.missed_since_join[b] as u64)
                    .sum()
            }),
            sim_seconds: sim.elapsed().as_secs_f64(),
            events: sim.events_run,
        };
        Report {
            scenario: self.clone(),
            summary,
            peers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> Scenario {
        Scenario {
            seed,
            receivers: 40,
            duration_s: 20.0,
            join_over_s: 3.0,
            not_dialable: 0.4,
            no_upload: 0.2,
            churn: 0.2,
            ..Scenario::default()
        }
    }

    fn run(sc: &Scenario) -> Report {
        let mut sim = sc.build().unwrap();
        sim.run_for(sc.run_time());
        sc.report(&sim)
    }

    fn fingerprint(r: &Report) -> Vec<(u64, Option<u64>, Option<u64>, u64)> {
        (r.peers.iter())
            .map(|p| {
                (
                    p.continuity.to_bits(),
                    p.startup_ms,
                    p.delay_ms,
                    p.pieces_received,
                )
            })
            .collect()
    }

    #[test]
    fn a_crowd_behind_nats_without_upload_is_served_by_the_swarm() {
        // 40 % cannot be dialled, 20 % upload nothing, 20 % leave early, round trips 20-250 ms.
        let r = run(&small(1));
        let s = &r.summary;
        assert_eq!(s.receivers, 40);
        assert_eq!(s.never_started, 0, "{s:?}");
        // Where it stands today (2026-12-07), exactly, as the run is seeded: a change in
        // behaviour shows here as a changed figure, which its commit explains. 34 of 40 at
        // 0.995 or better, the worst at 0.977, first byte 1.25 s, delay 0.75 s, origin 1.26
        // copies since dialable nodes open a quarter of their connections themselves, not
        // half (38, 0.984, 1.26 s, 0.75 s and 1.25: this small crowd lost where concert-200
        // gained; 31, 0.968, 1.26 s, 0.89 s and 1.24 before uploaders refused at once what
        // would wait over 250 ms; the commits before that give their own figures); the goal
        // of 99 % is ahead (see README, "At scale").
        assert_eq!((s.continuity_995 * 40.0).round(), 34.0, "{s:?}");
        assert_eq!(
            (s.continuity_min * 1e4).round(),
            9773.0,
            "worst continuity: {s:?}"
        );
        assert_eq!(
            (s.startup_median_ms, s.delay_median_ms, s.events),
            (Some(1250), Some(750), 309_118),
            "{s:?}"
        );
        assert_eq!(
            (s.origin_copies * 100.0).round(),
            126.0,
            "the swarm, not the origin, carries it: {s:?}"
        );
        let left = r.peers.iter().filter(|p| p.left_s.is_some()).count();
        assert!(left > 0 && r.peers.iter().any(|p| !p.dialable));
        // Every skipped piece is in the histogram of misses by time since joining.
        for p in &r.peers {
            let by_time: u64 = p.missed_since_join.iter().map(|&m| m as u64).sum();
            assert_eq!(by_time, p.pieces_missed, "node {}", p.node);
        }
        let missed: u64 = (r.peers.iter().filter(|p| p.hostile.is_none()))
            .filter(|p| p.role == Role::Receiver)
            .map(|p| p.pieces_missed)
            .sum();
        assert!(
            missed > 0,
            "the histogram is checked against misses that happened"
        );
        assert_eq!(s.missed_since_join.iter().sum::<u64>(), missed);
    }

    #[test]
    fn leeches_take_the_stream_upload_nothing_and_cost_the_honest_their_capacity() {
        let sc = Scenario {
            hostile: 0.3,
            hostile_kinds: vec![Hostile::Leech],
            ..small(1)
        };
        let r = run(&sc);
        let leeches: Vec<&PeerReport> = r.peers.iter().filter(|p| p.hostile.is_some()).collect();
        assert_eq!(leeches.len(), 17);
        for p in &leeches {
            assert_eq!(p.upload_copies, 0.0, "node {}", p.node);
            assert!(p.pieces_received > 0, "node {}", p.node);
            assert_eq!(p.peers_banned, 0, "a leech breaks no rule: node {}", p.node);
        }
        // The same 40 honest receivers as `a_crowd_behind_nats...`, exactly (seeded): 16 of
        // 40 at 0.995 or better with the 17 leeches, the worst at 0.838, against 34 and
        // 0.977 without. Nobody lied; the leeches only took upload the honest needed (see
        // README, "Adversaries").
        let s = &r.summary;
        assert_eq!((s.bans, s.never_started), (0, 0), "{s:?}");
        assert_eq!((s.continuity_995 * 40.0).round(), 16.0, "{s:?}");
        assert_eq!((s.continuity_min * 1e4).round(), 8384.0, "{s:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let a = run(&small(7));
        assert_eq!(fingerprint(&a), fingerprint(&run(&small(7))));
        assert_ne!(fingerprint(&a), fingerprint(&run(&small(8))));
    }

    #[test]
    fn bad_scenarios_are_refused_with_the_reason() {
        let bad = Scenario {
            loss: 0.7,
            ..Scenario::default()
        };
        assert!(matches!(bad.build(), Err(ScenarioError::Invalid(_))));
        let bad = Scenario {
            rtt_ms: [300.0, 20.0],
            ..Scenario::default()
        };
        assert!(bad.build().is_err());
    }

    #[test]
    fn histogram_quantiles() {
        let counts = [0, 2, 0, 2];
        assert_eq!(hist_quantile(&counts, 0.5), Some(30));
        assert_eq!(hist_quantile(&counts, 0.95), Some(70));
        assert_eq!(hist_quantile(&[], 0.5), None);
    }
}
