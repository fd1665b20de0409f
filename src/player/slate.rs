//! The status slate shown whenever there is no picture.

use std::net::IpAddr;

/// Receiver state in words, as shown on the slate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlateState {
    #[default]
    Joining,
    Buffering,
    Playing,
    Stalled,
    Ended,
    Error,
}

impl SlateState {
    pub fn words(self) -> &'static str {
        match self {
            Self::Joining => "Joining the swarm",
            Self::Buffering => "Buffering",
            Self::Playing => "Playing",
            Self::Stalled => "Stalled: waiting for data",
            Self::Ended => "The stream has ended",
            Self::Error => "Error",
        }
    }
}

/// What the swarm side tells the player to show on the slate.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct SlateInfo {
    pub state: SlateState,
    pub peers: u32,
    /// 0.0 ..= 1.0
    pub buffer_fill: f32,
    pub error: Option<String>,
}

/// Longest line we put on screen (hostile or silly error texts are cut).
const MAX_LINE: usize = 100;

fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_LINE)
        .collect();
    if s.chars().count() > MAX_LINE {
        out.push('…');
    }
    out
}

/// The slate's text (plain; textoverlay renders it without markup).
pub fn slate_text(event: &str, venue: &str, info: &SlateInfo, ips: &[IpAddr]) -> String {
    let mut lines = Vec::new();
    if !event.is_empty() {
        lines.push(clean(event));
    }
    if !venue.is_empty() {
        lines.push(clean(venue));
    }
    lines.push(String::new());
    lines.push(info.state.words().to_string());
    let fill = if info.buffer_fill.is_finite() {
        (info.buffer_fill.clamp(0.0, 1.0) * 100.0).round() as u32
    } else {
        0
    };
    lines.push(format!("Peers: {}    Buffer: {}%", info.peers, fill));
    if ips.is_empty() {
        lines.push("IP: no network address".to_string());
    } else {
        let list: Vec<String> = ips.iter().take(4).map(|ip| ip.to_string()).collect();
        lines.push(format!("IP: {}", list.join("  ")));
    }
    if let Some(e) = &info.error {
        lines.push(format!("Error: {}", clean(e)));
    }
    lines.join("\n")
}

/// This machine's addresses worth showing: not loopback, not IPv6 link-local.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let Some(addr) = ifa.address else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            let link_local_v6 =
                matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            if ip.is_loopback() || link_local_v6 || out.contains(&ip) {
                continue;
            }
            out.push(ip);
        }
    }
    // IPv4 first: that is what a technician types.
    out.sort_by_key(|ip| ip.is_ipv6());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_everything() {
        let info = SlateInfo {
            state: SlateState::Stalled,
            peers: 3,
            buffer_fill: 0.456,
            error: Some("bad\npiece".into()),
        };
        let ips = ["192.168.1.20".parse().unwrap()];
        let t = slate_text("Concert", "Hall B", &info, &ips);
        for want in [
            "Concert",
            "Hall B",
            "Stalled",
            "Peers: 3",
            "Buffer: 46%",
            "192.168.1.20",
            "Error: bad piece",
        ] {
            assert!(t.contains(want), "{want:?} missing in {t:?}");
        }
        let long = "x".repeat(10_000);
        let t = slate_text(
            &long,
            "",
            &SlateInfo {
                buffer_fill: f32::NAN,
                ..Default::default()
            },
            &[],
        );
        assert!(t.len() < 400);
        assert!(t.contains("Buffer: 0%"));
    }

    #[test]
    fn addresses_do_not_include_loopback() {
        assert!(local_addresses().iter().all(|ip| !ip.is_loopback()));
    }
}
