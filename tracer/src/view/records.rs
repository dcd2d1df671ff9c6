//! Reading records one at a time: what `tracer report` and `tracer plot` read
//! captures and tools' NDJSON through. Today every record is a line of JSON;
//! a second capture format can plug in behind the same iterator.
//!
//! A line is bounded (`MAX_LINE`): the longest real ones are capture headers
//! listing many triggers (an event is about 300 bytes), so a longer line is
//! not a record of tracer, and reading it whole (`/dev/zero`) would never end.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read as _},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// The longest line read, in bytes.
pub const MAX_LINE: usize = 16 << 20;

/// One record and where it was.
#[derive(Debug)]
pub struct Record {
    /// Byte offset of its line: `Records::at` reads it again.
    pub offset: u64,
    pub value: Value,
}

/// The records of a file, in order; blank lines are skipped. Reading stops
/// at the first error (what follows a line too long is not a line).
pub struct Records<R> {
    name: String,
    input: R,
    /// Lines read so far.
    line: u64,
    /// Byte offset of the next line.
    offset: u64,
    buf: Vec<u8>,
}

impl Records<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Records::new(
            &path.display().to_string(),
            BufReader::with_capacity(1 << 16, file),
        ))
    }

    /// The record whose line starts at `offset` (read before from this file).
    /// Nearby offsets are read from the buffer, without a system call.
    pub fn at(&mut self, offset: u64) -> Result<Value> {
        self.input
            .seek_relative(offset as i64 - self.offset as i64)
            .with_context(|| format!("reading {}", self.name))?;
        self.offset = offset;
        if !self.fill(|name| format!("{name} at byte {offset}"))? {
            bail!(
                "{} ended before byte {offset}: was it changed while being read?",
                self.name
            );
        }
        serde_json::from_slice(&self.buf)
            .with_context(|| format!("{} at byte {offset}: not JSON", self.name))
    }
}

impl<R: BufRead> Records<R> {
    /// Records read from `input`; `name` (the path) is what messages say.
    pub fn new(name: &str, input: R) -> Self {
        Records {
            name: name.to_string(),
            input,
            line: 0,
            offset: 0,
            buf: Vec::new(),
        }
    }

    /// Reads the next line (without its newline) into `buf`: false at the end.
    /// `place` names the line in messages.
    fn fill(&mut self, place: impl Fn(&str) -> String) -> Result<bool> {
        self.buf.clear();
        // After a long header, do not keep its buffer for every short line.
        self.buf.shrink_to(1 << 16);
        let n = (&mut self.input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.buf)
            .with_context(|| format!("reading {}", self.name))?;
        self.offset += n as u64;
        if n == 0 {
            return Ok(false);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        } else if n > MAX_LINE {
            bail!(
                "{}: longer than {} MiB (not a record of tracer)",
                place(&self.name),
                MAX_LINE >> 20
            );
        }
        Ok(true)
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            let offset = self.offset;
            let line = self.line + 1;
            match self.fill(|name| format!("{name} line {line}")) {
                Err(e) => return Some(Err(e)),
                Ok(false) => return None,
                Ok(true) => self.line = line,
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(
                serde_json::from_slice(&self.buf)
                    .map(|value| Record { offset, value })
                    .with_context(|| format!("{} line {line}: not JSON", self.name)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write as _};

    use super::*;

    fn read_all(text: &[u8]) -> Vec<Result<Record>> {
        Records::new("f", Cursor::new(text.to_vec())).collect()
    }

    #[test]
    fn records_with_their_offsets() {
        let text = b"{\"a\":1}\n\n  \n{\"b\":2}\r\n{\"c\":3}";
        let recs: Vec<Record> = read_all(text).into_iter().map(|r| r.unwrap()).collect();
        let got: Vec<(u64, Value)> = recs.into_iter().map(|r| (r.offset, r.value)).collect();
        assert_eq!(
            got,
            vec![
                (0, serde_json::json!({"a": 1})),
                (12, serde_json::json!({"b": 2})),
                (21, serde_json::json!({"c": 3})),
            ]
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        let recs = read_all(b"{\"a\":1}\nnot json\n");
        assert!(recs[0].is_ok());
        let e = format!("{:#}", recs[1].as_ref().unwrap_err());
        assert!(e.starts_with("f line 2: not JSON: "), "{e}");
    }

    #[test]
    fn a_line_is_bounded() {
        // Exactly MAX_LINE bytes is a line; one more is refused, without
        // reading further.
        let mut text = b"1\n2".to_vec();
        text.extend(std::iter::repeat_n(b' ', MAX_LINE - 1));
        text.push(b'\n');
        text.extend(std::iter::repeat_n(b'3', MAX_LINE + 1));
        text.extend_from_slice(b"\n4\n");
        let recs: Vec<_> = Records::new("f", Cursor::new(text)).take(3).collect();
        assert_eq!(recs[1].as_ref().unwrap().value, serde_json::json!(2));
        assert_eq!(
            format!("{:#}", recs[2].as_ref().unwrap_err()),
            "f line 3: longer than 16 MiB (not a record of tracer)"
        );
    }

    #[test]
    fn records_are_read_again_at_their_offsets() {
        let path = std::env::temp_dir().join(format!("tracer-records-{}", std::process::id()));
        let mut f = File::create(&path).unwrap();
        for i in 0..10_000 {
            writeln!(f, "{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 50)).unwrap();
        }
        drop(f);
        let mut recs = Records::open(&path).unwrap();
        let offsets: Vec<u64> = recs.by_ref().map(|r| r.unwrap().offset).collect();
        // Backwards, then in a scattered order: every one is the same record.
        for i in (0..10_000)
            .rev()
            .chain((0..10_000).map(|i| (i * 7919) % 10_000))
        {
            assert_eq!(recs.at(offsets[i]).unwrap()["i"], i, "record {i}");
        }
        let e = recs.at(offsets[9_999] + 1_000_000).unwrap_err();
        assert!(format!("{e:#}").contains("ended before byte"), "{e:#}");
        let _ = std::fs::remove_file(&path);
        let e = Records::open(&path).err().unwrap();
        assert!(format!("{e:#}").starts_with("reading /"), "{e:#}");
    }
}
