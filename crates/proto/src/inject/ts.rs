//! Pure, panic-free MPEG-TS parsing: packet header, adaptation field (PCR, random access,
//! discontinuity), PSI sections (PAT, PMT) and keyframe detection for the video PID.
//!
//! Nothing here allocates more than a bounded amount, reads a clock or panics, whatever the
//! input bytes are (see the randomized test in `ts/tests.rs`).

/// Size of one TS packet.
pub const PACKET_SIZE: usize = 188;
/// First byte of every TS packet.
pub const SYNC_BYTE: u8 = 0x47;
/// PID of the program association table.
pub const PAT_PID: u16 = 0x0000;
/// PID of null (stuffing) packets.
pub const NULL_PID: u16 = 0x1fff;
/// PCR clock rate (27 MHz).
pub const PCR_HZ: u64 = 27_000_000;
/// The PCR wraps at 2^33 * 300 ticks (about 26.5 hours).
pub const PCR_WRAP: u64 = (1 << 33) * 300;
/// Longest PSI section (section_length is at most 1021 for PAT/PMT, 4093 for private).
const MAX_SECTION: usize = 3 + 4093;
/// At most this many elementary streams / programs are kept from one table.
const MAX_ENTRIES: usize = 64;

/// The fixed 4-byte header of a TS packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub transport_error: bool,
    /// payload_unit_start_indicator: a PES or PSI section starts in this packet.
    pub pusi: bool,
    pub pid: u16,
    pub scrambling: u8,
    pub has_adaptation: bool,
    pub has_payload: bool,
    pub continuity_counter: u8,
}

/// The fields of an adaptation field that the injector cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Adaptation {
    pub discontinuity: bool,
    pub random_access: bool,
    /// Program clock reference in 27 MHz ticks (base * 300 + extension).
    pub pcr: Option<u64>,
}

/// A view of one 188-byte TS packet. Construct with [`Packet::parse`].
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    bytes: &'a [u8; PACKET_SIZE],
    header: Header,
}

impl<'a> Packet<'a> {
    /// Parse the first 188 bytes of `bytes`; `None` when too short or the sync byte is wrong.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let bytes: &[u8; PACKET_SIZE] = bytes.get(..PACKET_SIZE)?.try_into().ok()?;
        if bytes[0] != SYNC_BYTE {
            return None;
        }
        let header = Header {
            transport_error: bytes[1] & 0x80 != 0,
            pusi: bytes[1] & 0x40 != 0,
            pid: u16::from(bytes[1] & 0x1f) << 8 | u16::from(bytes[2]),
            scrambling: bytes[3] >> 6,
            has_adaptation: bytes[3] & 0x20 != 0,
            has_payload: bytes[3] & 0x10 != 0,
            continuity_counter: bytes[3] & 0x0f,
        };
        Some(Packet { bytes, header })
    }

    pub fn header(&self) -> Header {
        self.header
    }
    pub fn pid(&self) -> u16 {
        self.header.pid
    }
    pub fn pusi(&self) -> bool {
        self.header.pusi
    }
    pub fn bytes(&self) -> &'a [u8; PACKET_SIZE] {
        self.bytes
    }

    /// The adaptation field's flags and PCR; `None` when absent, empty or malformed.
    pub fn adaptation(&self) -> Option<Adaptation> {
        if !self.header.has_adaptation {
            return None;
        }
        let len = usize::from(self.bytes[4]);
        if len == 0 || len > PACKET_SIZE - 5 {
            return None;
        }
        let af = &self.bytes[5..5 + len];
        let flags = af[0];
        let pcr = if flags & 0x10 != 0 && af.len() >= 7 {
            let b = &af[1..7];
            let base = u64::from(b[0]) << 25
                | u64::from(b[1]) << 17
                | u64::from(b[2]) << 9
                | u64::from(b[3]) << 1
                | u64::from(b[4] >> 7);
            let ext = u64::from(b[4] & 0x01) << 8 | u64::from(b[5]);
            Some(base * 300 + ext)
        } else {
            None
        };
        Some(Adaptation {
            discontinuity: flags & 0x80 != 0,
            random_access: flags & 0x40 != 0,
            pcr,
        })
    }

    /// Offset of the payload within the packet; `None` without payload or when the
    /// adaptation field length leaves no room for one.
    pub fn payload_offset(&self) -> Option<usize> {
        if !self.header.has_payload {
            return None;
        }
        let off = if self.header.has_adaptation {
            5 + usize::from(self.bytes[4])
        } else {
            4
        };
        (off < PACKET_SIZE).then_some(off)
    }

    /// The payload bytes (possibly empty when absent).
    pub fn payload(&self) -> &'a [u8] {
        match self.payload_offset() {
            Some(off) => &self.bytes[off..],
            None => &[],
        }
    }
}

/// Errors in a PSI section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PsiError {
    #[error("section too short")]
    Short,
    #[error("unexpected table_id {0:#04x}")]
    TableId(u8),
    #[error("section_length out of bounds")]
    Length,
    #[error("CRC32 mismatch")]
    Crc,
}

/// MPEG-2 CRC-32 (poly 0x04C11DB7, init all ones, no reflection, no final xor).
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Check a complete long-form section (header, body, CRC) and return the body between the
/// 8-byte header and the CRC.
fn long_section(section: &[u8], table_id: u8) -> Result<&[u8], PsiError> {
    if section.len() < 3 {
        return Err(PsiError::Short);
    }
    if section[0] != table_id {
        return Err(PsiError::TableId(section[0]));
    }
    let len = usize::from(section[1] & 0x0f) << 8 | usize::from(section[2]);
    if !(9..=1021).contains(&len) {
        return Err(PsiError::Length);
    }
    let total = 3 + len;
    let section = section.get(..total).ok_or(PsiError::Short)?;
    if crc32_mpeg2(section) != 0 {
        return Err(PsiError::Crc);
    }
    Ok(&section[8..total - 4])
}

/// One program of a PAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatEntry {
    pub program_number: u16,
    pub pmt_pid: u16,
}

/// Parse a PAT section (starting at table_id). Program number 0 (the NIT) is skipped.
pub fn parse_pat(section: &[u8]) -> Result<Vec<PatEntry>, PsiError> {
    let body = long_section(section, 0x00)?;
    Ok(body
        .chunks_exact(4)
        .map(|e| PatEntry {
            program_number: u16::from_be_bytes([e[0], e[1]]),
            pmt_pid: u16::from(e[2] & 0x1f) << 8 | u16::from(e[3]),
        })
        .filter(|e| e.program_number != 0)
        .take(MAX_ENTRIES)
        .collect())
}

/// An elementary stream listed in a PMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EsInfo {
    pub stream_type: u8,
    pub pid: u16,
}

/// A parsed PMT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pmt {
    pub program_number: u16,
    pub pcr_pid: u16,
    pub streams: Vec<EsInfo>,
}

/// Parse a PMT section (starting at table_id).
pub fn parse_pmt(section: &[u8]) -> Result<Pmt, PsiError> {
    let body = long_section(section, 0x02)?;
    // The header bytes 3..5 hold the program number.
    let program_number = u16::from_be_bytes([section[3], section[4]]);
    if body.len() < 4 {
        return Err(PsiError::Short);
    }
    let pcr_pid = u16::from(body[0] & 0x1f) << 8 | u16::from(body[1]);
    let info_len = usize::from(body[2] & 0x0f) << 8 | usize::from(body[3]);
    let mut rest = body.get(4 + info_len..).ok_or(PsiError::Length)?;
    let mut streams = Vec::new();
    while rest.len() >= 5 && streams.len() < MAX_ENTRIES {
        let stream_type = rest[0];
        let pid = u16::from(rest[1] & 0x1f) << 8 | u16::from(rest[2]);
        let es_info_len = usize::from(rest[3] & 0x0f) << 8 | usize::from(rest[4]);
        streams.push(EsInfo { stream_type, pid });
        rest = rest.get(5 + es_info_len..).ok_or(PsiError::Length)?;
    }
    Ok(Pmt {
        program_number,
        pcr_pid,
        streams,
    })
}

/// Video codecs whose keyframes the injector can find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    Hevc,
    /// MPEG-2 or another video type: only the random_access_indicator is used.
    Other(u8),
}

impl VideoCodec {
    /// The video codec for a PMT stream_type, `None` for non-video types.
    pub fn from_stream_type(stream_type: u8) -> Option<Self> {
        match stream_type {
            0x1b => Some(VideoCodec::H264),
            0x24 => Some(VideoCodec::Hevc),
            0x01 | 0x02 | 0x10 | 0x20 | 0x33 | 0xd1 | 0xea => Some(VideoCodec::Other(stream_type)),
            _ => None,
        }
    }
}

/// Reassembles PSI sections of one PID from packet payloads. Bounded to one section.
#[derive(Debug, Default)]
pub struct SectionAssembler {
    buf: Vec<u8>,
    active: bool,
}

impl SectionAssembler {
    /// Feed one packet of this PID; calls `f` with every section completed by it.
    pub fn push(&mut self, packet: &Packet<'_>, mut f: impl FnMut(&[u8])) {
        let payload = packet.payload();
        if payload.is_empty() {
            return;
        }
        let mut data = payload;
        if packet.pusi() {
            let pointer = usize::from(data[0]);
            let Some(tail) = data.get(1..1 + pointer) else {
                self.reset();
                return;
            };
            if self.active {
                self.extend(tail);
                self.emit(&mut f);
            }
            self.reset();
            data = &data[1 + pointer..];
            // Further sections may follow in the same payload.
            loop {
                match data.first() {
                    None | Some(0xff) => return,
                    Some(_) => {}
                }
                if data.len() < 3 {
                    self.active = true;
                    self.extend(data);
                    return;
                }
                let total = 3 + (usize::from(data[1] & 0x0f) << 8 | usize::from(data[2]));
                if total <= data.len() {
                    f(&data[..total]);
                    data = &data[total..];
                } else {
                    self.active = true;
                    self.extend(data);
                    return;
                }
            }
        } else if self.active {
            self.extend(data);
            self.emit(&mut f);
        }
    }

    fn extend(&mut self, data: &[u8]) {
        if self.buf.len() + data.len() > MAX_SECTION {
            self.reset();
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    fn emit(&mut self, f: &mut impl FnMut(&[u8])) {
        if self.buf.len() < 3 {
            return;
        }
        let total = 3 + (usize::from(self.buf[1] & 0x0f) << 8 | usize::from(self.buf[2]));
        if self.buf.len() >= total {
            f(&self.buf[..total]);
            self.reset();
        }
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.active = false;
    }
}

/// What a packet is, as far as piece cutting is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Pat,
    Pmt,
    /// A packet of the video PID; `random_access` when it starts a keyframe.
    Video {
        random_access: bool,
    },
    Other,
}

/// Follows PAT and PMT of the first program and classifies packets.
#[derive(Debug, Default)]
pub struct ProgramTracker {
    pat: SectionAssembler,
    pmt: SectionAssembler,
    pmt_pid: Option<u16>,
    program_number: u16,
    pcr_pid: Option<u16>,
    video: Option<(u16, VideoCodec)>,
    pmt_version: Option<Pmt>,
}

impl ProgramTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// PID of the PMT of the followed program.
    pub fn pmt_pid(&self) -> Option<u16> {
        self.pmt_pid
    }
    /// PCR PID from the PMT.
    pub fn pcr_pid(&self) -> Option<u16> {
        self.pcr_pid
    }
    /// The first video stream of the PMT.
    pub fn video(&self) -> Option<(u16, VideoCodec)> {
        self.video
    }
    /// The last PMT parsed.
    pub fn pmt(&self) -> Option<&Pmt> {
        self.pmt_version.as_ref()
    }

    /// Learn from a packet and classify it.
    pub fn observe(&mut self, packet: &Packet<'_>) -> PacketKind {
        let pid = packet.pid();
        if pid == PAT_PID {
            let mut found = None;
            self.pat.push(packet, |s| {
                if let Ok(pat) = parse_pat(s)
                    && let Some(first) = pat.first()
                {
                    found = Some(*first);
                }
            });
            if let Some(entry) = found
                && (self.pmt_pid != Some(entry.pmt_pid)
                    || self.program_number != entry.program_number)
            {
                self.pmt_pid = Some(entry.pmt_pid);
                self.program_number = entry.program_number;
                self.pmt = SectionAssembler::default();
            }
            return PacketKind::Pat;
        }
        if Some(pid) == self.pmt_pid {
            let mut found = None;
            self.pmt.push(packet, |s| {
                if let Ok(pmt) = parse_pmt(s) {
                    found = Some(pmt);
                }
            });
            if let Some(pmt) = found
                && pmt.program_number == self.program_number
            {
                self.pcr_pid = (pmt.pcr_pid != NULL_PID).then_some(pmt.pcr_pid);
                self.video = pmt.streams.iter().find_map(|es| {
                    VideoCodec::from_stream_type(es.stream_type).map(|c| (es.pid, c))
                });
                self.pmt_version = Some(pmt);
            }
            return PacketKind::Pmt;
        }
        match self.video {
            Some((vpid, codec)) if vpid == pid => PacketKind::Video {
                random_access: is_random_access(packet, codec),
            },
            _ => PacketKind::Other,
        }
    }
}

/// Does this video packet start a random-access point? True when the adaptation field sets
/// random_access_indicator, or when a PES starts here (PUSI) and the bytes of this packet
/// after the PES header hold an H.264 IDR slice (NAL type 5) / HEVC IRAP (types 16..=23), or
/// a sequence parameter set (H.264 SPS; HEVC VPS/SPS) not followed by a non-IRAP slice in
/// this packet (encoders put parameter sets only in front of keyframes, and a long SEI can
/// push the IDR slice itself into the next packet).
pub fn is_random_access(packet: &Packet<'_>, codec: VideoCodec) -> bool {
    if packet.adaptation().is_some_and(|a| a.random_access) {
        return true;
    }
    if !packet.pusi() {
        return false;
    }
    let Some(es) = pes_payload(packet.payload()) else {
        return false;
    };
    match codec {
        VideoCodec::H264 => scan_nals(es, |nal| match nal & 0x1f {
            5 => Nal::Irap,
            1 => Nal::NonIrap,
            7 => Nal::ParameterSet,
            _ => Nal::Other,
        }),
        VideoCodec::Hevc => scan_nals(es, |nal| match (nal >> 1) & 0x3f {
            16..=23 => Nal::Irap,
            0..=9 => Nal::NonIrap,
            32 | 33 => Nal::ParameterSet,
            _ => Nal::Other,
        }),
        VideoCodec::Other(_) => false,
    }
}

enum Nal {
    Irap,
    NonIrap,
    ParameterSet,
    Other,
}

/// Scan Annex-B NAL units (start code 00 00 01) and classify each by its header byte. The
/// first slice decides; without one, a parameter set seen counts as a random-access point.
fn scan_nals(es: &[u8], classify: impl Fn(u8) -> Nal) -> bool {
    let mut saw_parameter_set = false;
    let mut i = 0;
    while i + 3 < es.len() {
        if es[i] == 0 && es[i + 1] == 0 && es[i + 2] == 1 {
            match classify(es[i + 3]) {
                Nal::Irap => return true,
                Nal::NonIrap => return false,
                Nal::ParameterSet => saw_parameter_set = true,
                Nal::Other => {}
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    saw_parameter_set
}

/// The elementary stream bytes after a PES header at the start of `payload`.
pub fn pes_payload(payload: &[u8]) -> Option<&[u8]> {
    if payload.len() < 9 || payload[..3] != [0, 0, 1] {
        return None;
    }
    let stream_id = payload[3];
    // Streams without the optional PES header.
    if matches!(
        stream_id,
        0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xff | 0xf2 | 0xf8
    ) {
        return payload.get(6..);
    }
    let header_len = usize::from(payload[8]);
    payload.get(9 + header_len..)
}

#[doc(hidden)]
pub mod build;
#[cfg(test)]
mod tests;
