//! Sans-IO PCR pacer: plays a TS file at the stream's own rate.
//!
//! The first PCR is anchored to the `now` it is seen at; a later PCR maps to
//! `anchor + (pcr - pcr_anchor) / 27 MHz` (counted through the 2^33*300 wrap-around).
//! Packets without a PCR are released with the previous PCR's time (before the first PCR:
//! at once). A discontinuity re-anchors at the previous release time: the adaptation field's
//! discontinuity_indicator, a PCR going backwards, or a jump of more than [`MAX_PCR_JUMP`]
//! forwards. When the driver falls more than [`MAX_LATE`] behind (a slow consumer), the pacer
//! re-anchors at `now` instead of bursting to catch up.
//!
//! Only the PCR PID counts: the PMT's PCR_PID once known, before that the first PID seen
//! carrying a PCR.

use std::time::{Duration, Instant};

use super::ts::{PACKET_SIZE, PCR_HZ, PCR_WRAP, Packet, ProgramTracker};

/// A forward PCR jump larger than this is a discontinuity.
pub const MAX_PCR_JUMP: Duration = Duration::from_secs(2);
/// Falling further behind than this re-anchors at `now`.
pub const MAX_LATE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Anchor {
    at: Instant,
    last_pcr: u64,
    /// 27 MHz ticks since `at`.
    elapsed: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct PcrPacer {
    tracker: ProgramTracker,
    pcr_pid: Option<u16>,
    anchor: Option<Anchor>,
    last_release: Option<Instant>,
    reanchors: u64,
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(PCR_HZ);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

impl PcrPacer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The PID whose PCRs pace the stream, once known.
    pub fn pcr_pid(&self) -> Option<u16> {
        self.pcr_pid
    }

    /// How often the pacer re-anchored (discontinuities, jumps, falling behind).
    pub fn reanchors(&self) -> u64 {
        self.reanchors
    }

    /// When `packet` should be released. Packets that are not valid TS packets are released
    /// with the previous packet.
    pub fn release_at(&mut self, packet: &[u8; PACKET_SIZE], now: Instant) -> Instant {
        let current = self.last_release.unwrap_or(now);
        let Some(p) = Packet::parse(packet) else {
            return current;
        };
        self.tracker.observe(&p);
        if let Some(pid) = self.tracker.pcr_pid() {
            self.pcr_pid = Some(pid);
        }
        let Some(af) = p.adaptation() else {
            return current;
        };
        let Some(pcr) = af.pcr else {
            return current;
        };
        let pcr = pcr % PCR_WRAP;
        let pcr_pid = *self.pcr_pid.get_or_insert(p.pid());
        if p.pid() != pcr_pid {
            return current;
        }
        let max_jump = MAX_PCR_JUMP.as_secs() * PCR_HZ;
        let release = match &mut self.anchor {
            None => {
                self.anchor = Some(Anchor {
                    at: now,
                    last_pcr: pcr,
                    elapsed: 0,
                });
                now
            }
            Some(a) => {
                let delta = (pcr + PCR_WRAP - a.last_pcr) % PCR_WRAP;
                if af.discontinuity || delta > max_jump {
                    self.reanchors += 1;
                    let at = current.max(now);
                    *a = Anchor {
                        at,
                        last_pcr: pcr,
                        elapsed: 0,
                    };
                    at
                } else {
                    a.elapsed += delta;
                    a.last_pcr = pcr;
                    let release = a.at + ticks_to_duration(a.elapsed);
                    if now > release + MAX_LATE {
                        self.reanchors += 1;
                        *a = Anchor {
                            at: now,
                            last_pcr: pcr,
                            elapsed: 0,
                        };
                        now
                    } else {
                        release
                    }
                }
            }
        };
        self.last_release = Some(release);
        release
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ts::build::{packet, pat_section, pmt_section, psi_packet};
    use crate::test_media::small as ts_file;

    const MS: u64 = PCR_HZ / 1000;

    fn pcr(pid: u16, value: u64) -> [u8; 188] {
        packet(pid, false, Some((0, Some(value))), &[])
    }
    fn disc(pid: u16, value: u64) -> [u8; 188] {
        packet(pid, false, Some((0x80, Some(value))), &[])
    }
    fn plain(pid: u16) -> [u8; 188] {
        packet(pid, false, None, &[7; 50])
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn anchors_and_maps_pcr() {
        let t0 = Instant::now();
        let mut p = PcrPacer::new();
        // Before any PCR: at once.
        assert_eq!(p.release_at(&plain(0x100), t0), t0);
        let base = 1_000_000 * MS;
        assert_eq!(p.release_at(&pcr(0x100, base), t0 + ms(3)), t0 + ms(3));
        assert_eq!(p.pcr_pid(), Some(0x100));
        // Packets between PCRs keep the previous PCR's time, whatever `now` is.
        assert_eq!(p.release_at(&plain(0x101), t0 + ms(3)), t0 + ms(3));
        assert_eq!(
            p.release_at(&pcr(0x100, base + 40 * MS), t0 + ms(3)),
            t0 + ms(43)
        );
        assert_eq!(p.release_at(&plain(0x100), t0 + ms(4)), t0 + ms(43));
        // PCRs on another PID do not count.
        assert_eq!(
            p.release_at(&pcr(0x101, base + 900 * MS), t0 + ms(4)),
            t0 + ms(43)
        );
        assert_eq!(
            p.release_at(&pcr(0x100, base + 80 * MS), t0 + ms(43)),
            t0 + ms(83)
        );
        assert_eq!(p.reanchors(), 0);
    }

    #[test]
    fn pmt_selects_the_pcr_pid() {
        let t0 = Instant::now();
        let mut p = PcrPacer::new();
        p.release_at(&psi_packet(0, &pat_section(0x1000)), t0);
        p.release_at(
            &psi_packet(0x1000, &pmt_section(0x101, &[(0x1b, 0x100), (0x0f, 0x101)])),
            t0,
        );
        assert_eq!(p.pcr_pid(), Some(0x101));
        assert_eq!(p.release_at(&pcr(0x100, 5 * MS), t0), t0);
        assert_eq!(p.release_at(&pcr(0x101, 0), t0), t0);
        assert_eq!(p.release_at(&pcr(0x100, 500 * MS), t0), t0);
        assert_eq!(p.release_at(&pcr(0x101, 20 * MS), t0), t0 + ms(20));
    }

    #[test]
    fn wraps_around() {
        let t0 = Instant::now();
        let mut p = PcrPacer::new();
        p.release_at(&pcr(0x100, PCR_WRAP - 10 * MS), t0);
        assert_eq!(p.release_at(&pcr(0x100, 30 * MS), t0), t0 + ms(40));
        assert_eq!(p.reanchors(), 0);
    }

    #[test]
    fn discontinuities_reanchor() {
        let t0 = Instant::now();
        let mut p = PcrPacer::new();
        p.release_at(&pcr(0x100, 100_000 * MS), t0);
        assert_eq!(p.release_at(&pcr(0x100, 100_040 * MS), t0), t0 + ms(40));
        // Backwards: continue from the previous release time.
        assert_eq!(p.release_at(&pcr(0x100, 5_000 * MS), t0), t0 + ms(40));
        assert_eq!(p.release_at(&pcr(0x100, 5_020 * MS), t0), t0 + ms(60));
        assert_eq!(p.reanchors(), 1);
        // More than 2 s forwards.
        assert_eq!(p.release_at(&pcr(0x100, 9_000 * MS), t0), t0 + ms(60));
        assert_eq!(p.release_at(&pcr(0x100, 9_010 * MS), t0), t0 + ms(70));
        assert_eq!(p.reanchors(), 2);
        // Flagged discontinuity, even a small step.
        assert_eq!(p.release_at(&disc(0x100, 9_030 * MS), t0), t0 + ms(70));
        assert_eq!(p.reanchors(), 3);
        // 2 s exactly is still continuous.
        assert_eq!(p.release_at(&pcr(0x100, 11_030 * MS), t0), t0 + ms(2070));
        assert_eq!(p.reanchors(), 3);
    }

    #[test]
    fn falling_behind_reanchors_at_now() {
        let t0 = Instant::now();
        let mut p = PcrPacer::new();
        p.release_at(&pcr(0x100, 0), t0);
        let late = t0 + ms(5000);
        assert_eq!(p.release_at(&pcr(0x100, 40 * MS), late), late);
        assert_eq!(p.release_at(&pcr(0x100, 80 * MS), late), late + ms(40));
        assert_eq!(p.reanchors(), 1);
        // Garbage is released with the previous packet.
        assert_eq!(p.release_at(&[0u8; 188], t0), late + ms(40));
    }

    #[test]
    fn ffmpeg_file_paces_at_its_duration() {
        let path = ts_file("pz-h264-4s.ts", 4, "h264");
        let data = std::fs::read(path).unwrap();
        let t0 = Instant::now();
        let mut p = PcrPacer::new();
        let mut last = t0;
        for c in data.chunks_exact(188) {
            let r = p.release_at(c.try_into().unwrap(), t0);
            assert!(r >= last, "release times never go backwards");
            last = r;
        }
        let span = last - t0;
        assert!(
            span >= ms(3700) && span <= ms(4100),
            "paced span {span:?} for a 4 s file"
        );
        assert_eq!(p.reanchors(), 0);
    }
}
