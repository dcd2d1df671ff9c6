//! A Perfetto trace, hand-encoded: the few protobuf messages a TrackEvent trace
//! needs (Trace, TracePacket, TrackDescriptor, TrackEvent, DebugAnnotation),
//! with field numbers from perfetto's protos/perfetto/trace. The result opens in
//! ui.perfetto.dev; the tests parse it with the protos pip's `perfetto` ships.

use std::io::{self, Write};

use bytes::{BufMut as _, BytesMut};

/// TrackEvent.Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    SliceBegin = 1,
    SliceEnd = 2,
    Instant = 3,
}

/// A debug annotation's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Uint(u64),
    Int(i64),
    Double(f64),
    Str(String),
}

fn varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn key(out: &mut BytesMut, field: u32, wire: u32) {
    varint(out, ((field << 3) | wire) as u64);
}

fn uint_field(out: &mut BytesMut, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn bytes_field(out: &mut BytesMut, field: u32, v: &[u8]) {
    key(out, field, 2);
    varint(out, v.len() as u64);
    out.put_slice(v);
}

fn double_field(out: &mut BytesMut, field: u32, v: f64) {
    key(out, field, 1);
    out.put_f64_le(v);
}

/// A trace being written: each packet goes to `out` as it comes.
pub struct Trace<W: Write> {
    out: W,
    written: u64,
    first: bool,
}

const SEQUENCE: u64 = 1;
/// TracePacket.sequence_flags: SEQ_INCREMENTAL_STATE_CLEARED.
const STATE_CLEARED: u64 = 1;

impl<W: Write> Trace<W> {
    pub fn new(out: W) -> Self {
        Trace {
            out,
            written: 0,
            first: true,
        }
    }

    fn packet(
        &mut self,
        timestamp: Option<u64>,
        body: impl FnOnce(&mut BytesMut),
    ) -> io::Result<()> {
        let mut p = BytesMut::new();
        if let Some(ts) = timestamp {
            uint_field(&mut p, 8, ts);
        }
        uint_field(&mut p, 10, SEQUENCE);
        if self.first {
            uint_field(&mut p, 13, STATE_CLEARED);
            self.first = false;
        }
        body(&mut p);
        let mut framed = BytesMut::with_capacity(p.len() + 8);
        bytes_field(&mut framed, 1, &p);
        self.out.write_all(&framed)?;
        self.written += framed.len() as u64;
        Ok(())
    }

    /// Declares a track; `parent` nests it (a disk's lanes under the disk).
    pub fn track(&mut self, uuid: u64, parent: Option<u64>, name: &str) -> io::Result<()> {
        self.packet(None, |p| {
            let mut d = BytesMut::new();
            uint_field(&mut d, 1, uuid);
            if let Some(parent) = parent {
                uint_field(&mut d, 5, parent);
            }
            bytes_field(&mut d, 2, name.as_bytes());
            bytes_field(p, 60, &d);
        })
    }

    /// One TrackEvent: a slice's begin or end, or an instant.
    pub fn event(
        &mut self,
        ts: u64,
        track: u64,
        kind: Kind,
        name: &str,
        args: &[(&str, Arg)],
    ) -> io::Result<()> {
        self.packet(Some(ts), |p| {
            let mut e = BytesMut::new();
            uint_field(&mut e, 11, track);
            uint_field(&mut e, 9, kind as u64);
            if kind != Kind::SliceEnd {
                bytes_field(&mut e, 23, name.as_bytes());
                for (k, v) in args {
                    let mut a = BytesMut::new();
                    bytes_field(&mut a, 10, k.as_bytes());
                    match v {
                        Arg::Uint(n) => uint_field(&mut a, 3, *n),
                        Arg::Int(n) => uint_field(&mut a, 4, *n as u64),
                        Arg::Double(d) => double_field(&mut a, 5, *d),
                        Arg::Str(s) => bytes_field(&mut a, 6, s.as_bytes()),
                    }
                    bytes_field(&mut e, 4, &a);
                }
            }
            bytes_field(p, 11, &e);
        })
    }

    /// A slice [start, start + dur) with its annotations.
    pub fn slice(
        &mut self,
        start: u64,
        dur: u64,
        track: u64,
        name: &str,
        args: &[(&str, Arg)],
    ) -> io::Result<()> {
        self.event(start, track, Kind::SliceBegin, name, args)?;
        self.event(start + dur, track, Kind::SliceEnd, name, &[])
    }

    /// Flushes the output: the bytes written.
    pub fn finish(mut self) -> io::Result<u64> {
        self.out.flush()?;
        Ok(self.written)
    }
}

/// Assigns overlapping intervals to lanes, so that slices on one track never
/// overlap (Perfetto requires a track's slices to nest): the first lane whose
/// last interval has ended takes the next one.
#[derive(Debug, Default)]
pub struct Lanes {
    ends: Vec<u64>,
}

impl Lanes {
    /// The lane for [start, end); intervals must come in order of start.
    pub fn take(&mut self, start: u64, end: u64) -> usize {
        match self.ends.iter().position(|&e| e <= start) {
            Some(i) => {
                self.ends[i] = end;
                i
            }
            None => {
                self.ends.push(end);
                self.ends.len() - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_messages() {
        let mut b = BytesMut::new();
        varint(&mut b, 300);
        assert_eq!(&b[..], &[0xac, 0x02]);
        let mut bytes = Vec::new();
        let mut t = Trace::new(&mut bytes);
        t.track(7, None, "loop0").unwrap();
        t.slice(1000, 500, 7, "read", &[("sector", Arg::Uint(8))])
            .unwrap();
        assert_eq!(t.finish().unwrap(), bytes.len() as u64);
        // Trace.packet (field 1, length-delimited) three times.
        assert_eq!(bytes[0], 0x0a);
        let mut n = 0;
        let mut i = 0;
        while i < bytes.len() {
            assert_eq!(bytes[i], 0x0a);
            let (mut len, mut shift, mut j) = (0usize, 0, i + 1);
            loop {
                let b = bytes[j];
                len |= ((b & 0x7f) as usize) << shift;
                shift += 7;
                j += 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
            i = j + len;
            n += 1;
        }
        assert_eq!((i, n), (bytes.len(), 3));
    }

    #[test]
    fn overlapping_intervals_get_lanes() {
        let mut l = Lanes::default();
        assert_eq!(l.take(0, 10), 0);
        assert_eq!(l.take(5, 8), 1);
        assert_eq!(l.take(8, 9), 1);
        assert_eq!(l.take(10, 20), 0);
        assert_eq!(l.take(11, 12), 1);
        assert_eq!(l.take(11, 12), 2);
    }
}
