//! What the machine offers the player: V4L2 decoders, media controllers, DRM connectors
//! and ALSA cards. Each probe reads the kernel's own interfaces (ioctls on `/dev`, `sysfs`,
//! `/proc/asound`) with the root given, so tests can point them at a fake tree.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A V4L2 memory-to-memory device that takes compressed video.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct V4l2Decoder {
    pub path: String,
    pub card: String,
    pub driver: String,
    /// `h264`, `h265`; with `stateless` the device takes slices (the `v4l2sl*` elements).
    pub codecs: Vec<&'static str>,
    pub stateless: bool,
}

const fn fourcc(a: u8, b: u8, c: u8, d: u8) -> u32 {
    a as u32 | (b as u32) << 8 | (c as u32) << 16 | (d as u32) << 24
}

/// The codec and statefulness a V4L2 bitstream format stands for.
pub fn codec_of_fourcc(f: u32) -> Option<(&'static str, bool)> {
    match f {
        x if x == fourcc(b'H', b'2', b'6', b'4') => Some(("h264", false)),
        x if x == fourcc(b'H', b'E', b'V', b'C') => Some(("h265", false)),
        x if x == fourcc(b'S', b'2', b'6', b'4') => Some(("h264", true)),
        x if x == fourcc(b'S', b'2', b'6', b'5') => Some(("h265", true)),
        _ => None,
    }
}

#[repr(C)]
struct V4l2Capability {
    driver: [u8; 16],
    card: [u8; 32],
    bus_info: [u8; 32],
    version: u32,
    capabilities: u32,
    device_caps: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct V4l2FmtDesc {
    index: u32,
    kind: u32,
    flags: u32,
    description: [u8; 32],
    pixelformat: u32,
    mbus_code: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct MediaDeviceInfo {
    driver: [u8; 16],
    model: [u8; 32],
    serial: [u8; 40],
    bus_info: [u8; 32],
    media_version: u32,
    hw_revision: u32,
    driver_version: u32,
    reserved: [u32; 31],
}

nix::ioctl_read!(vidioc_querycap, b'V', 0, V4l2Capability);
nix::ioctl_readwrite!(vidioc_enum_fmt, b'V', 2, V4l2FmtDesc);
nix::ioctl_readwrite!(media_ioc_device_info, b'|', 0, MediaDeviceInfo);

const CAP_M2M_MPLANE: u32 = 0x0000_4000;
const CAP_M2M: u32 = 0x0000_8000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
const BUF_OUTPUT: u32 = 2;
const BUF_OUTPUT_MPLANE: u32 = 10;

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn open_dev(path: &Path) -> Option<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .ok()
}

/// Device nodes in `dir` whose names start with `prefix`, sorted.
fn nodes(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Every V4L2 M2M device under `dev` that decodes H.264 or H.265.
pub fn v4l2_decoders(dev: &Path) -> Vec<V4l2Decoder> {
    let mut out = Vec::new();
    for path in nodes(dev, "video") {
        let Some(file) = open_dev(&path) else {
            continue;
        };
        let fd = file.as_raw_fd();
        // SAFETY: the struct is plain old data of the size the ioctl number encodes.
        let mut cap: V4l2Capability = unsafe { std::mem::zeroed() };
        if unsafe { vidioc_querycap(fd, &mut cap) }.is_err() {
            continue;
        }
        let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
            cap.device_caps
        } else {
            cap.capabilities
        };
        let kind = if caps & CAP_M2M_MPLANE != 0 {
            BUF_OUTPUT_MPLANE
        } else if caps & CAP_M2M != 0 {
            BUF_OUTPUT
        } else {
            continue;
        };
        let mut codecs = Vec::new();
        let mut stateless = false;
        for index in 0..64 {
            // SAFETY: as above.
            let mut desc: V4l2FmtDesc = unsafe { std::mem::zeroed() };
            desc.index = index;
            desc.kind = kind;
            if unsafe { vidioc_enum_fmt(fd, &mut desc) }.is_err() {
                break;
            }
            if let Some((codec, sl)) = codec_of_fourcc(desc.pixelformat) {
                if !codecs.contains(&codec) {
                    codecs.push(codec);
                }
                stateless |= sl;
            }
        }
        if !codecs.is_empty() {
            out.push(V4l2Decoder {
                path: path.display().to_string(),
                card: c_str(&cap.card),
                driver: c_str(&cap.driver),
                codecs,
                stateless,
            });
        }
    }
    out
}

/// Media controllers (`/dev/media*`): stateless decoders register one. `(path, driver, model)`.
pub fn media_devices(dev: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for path in nodes(dev, "media") {
        let Some(file) = open_dev(&path) else {
            continue;
        };
        // SAFETY: plain old data of the size the ioctl number encodes.
        let mut info: MediaDeviceInfo = unsafe { std::mem::zeroed() };
        if unsafe { media_ioc_device_info(file.as_raw_fd(), &mut info) }.is_ok() {
            out.push((
                path.display().to_string(),
                c_str(&info.driver),
                c_str(&info.model),
            ));
        }
    }
    out
}

/// A DRM card and its connectors with their state, from `sysfs_drm` (`/sys/class/drm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrmCard {
    pub card: String,
    /// `(connector, connected)`, e.g. `("HDMI-A-1", true)`.
    pub connectors: Vec<(String, bool)>,
}

pub fn drm_cards(sysfs_drm: &Path) -> Vec<DrmCard> {
    let mut cards: Vec<DrmCard> = Vec::new();
    for path in nodes(sysfs_drm, "card") {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match name.split_once('-') {
            None => cards.push(DrmCard {
                card: name,
                connectors: Vec::new(),
            }),
            Some((card, connector)) => {
                let connected = fs::read_to_string(path.join("status"))
                    .map(|s| s.trim() == "connected")
                    .unwrap_or(false);
                if let Some(c) = cards.iter_mut().find(|c| c.card == card) {
                    c.connectors.push((connector.to_string(), connected));
                }
            }
        }
    }
    cards
}

/// ALSA cards from the text of `/proc/asound/cards`: `(index, id, name)`.
pub fn parse_asound_cards(text: &str) -> Vec<(u32, String, String)> {
    text.lines()
        .filter_map(|line| {
            let (index, rest) = line.trim_start().split_once(' ')?;
            let index: u32 = index.parse().ok()?;
            let id = rest
                .split_once('[')?
                .1
                .split_once(']')?
                .0
                .trim()
                .to_string();
            let name = rest.split_once("]:")?.1.trim().to_string();
            Some((index, id, name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourccs_name_their_codecs() {
        assert_eq!(codec_of_fourcc(0x3436_3248), Some(("h264", false)));
        assert_eq!(
            codec_of_fourcc(fourcc(b'S', b'2', b'6', b'5')),
            Some(("h265", true))
        );
        assert_eq!(codec_of_fourcc(fourcc(b'Y', b'U', b'Y', b'V')), None);
    }

    #[test]
    fn asound_cards_parse() {
        let text = " 0 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0\n                      vc4-hdmi-0\n 1 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones\n                      bcm2835 Headphones\n";
        let cards = parse_asound_cards(text);
        assert_eq!(cards.len(), 2);
        assert_eq!(cards[0].1, "vc4hdmi0");
        assert_eq!(cards[1].2, "bcm2835_headpho - bcm2835 Headphones");
        assert!(parse_asound_cards("--- no soundcards ---\n").is_empty());
    }

    #[test]
    fn drm_connectors_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        for (name, status) in [
            ("card0", None),
            ("card0-HDMI-A-1", Some("connected\n")),
            ("card0-HDMI-A-2", Some("disconnected\n")),
            ("renderD128", None),
        ] {
            let p = dir.path().join(name);
            fs::create_dir(&p).unwrap();
            if let Some(s) = status {
                fs::write(p.join("status"), s).unwrap();
            }
        }
        let cards = drm_cards(dir.path());
        assert_eq!(
            cards,
            vec![DrmCard {
                card: "card0".into(),
                connectors: vec![("HDMI-A-1".into(), true), ("HDMI-A-2".into(), false)],
            }]
        );
        assert!(drm_cards(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn no_devices_no_decoders() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file named like a device is not a V4L2 device.
        fs::write(dir.path().join("video0"), b"").unwrap();
        assert!(v4l2_decoders(dir.path()).is_empty());
        assert!(media_devices(dir.path()).is_empty());
    }
}
