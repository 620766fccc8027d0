//! An `rbd diff v1` stream passed on byte for byte, checked as it goes.
//!
//! `rbd import-diff` skips tag bytes it does not know and carries on, so a corrupt diff can be
//! applied as garbage while the import "succeeds". Restore therefore feeds `rbd` through this
//! reader: every byte is first read by the strict [`DiffReader`], and only the bytes of records it
//! accepted are handed on. At the first problem the stream fails instead, so `rbd` sees a stream
//! cut short and the restore stops. Memory stays bounded by one read of a payload chunk.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use crate::folder::format::diffstream::{DiffError, DiffHeader, DiffReader, Record};

const PAYLOAD_CHUNK: usize = 256 * 1024;

/// Keeps a copy of every byte the parser pulls from the source.
struct Recorder<R> {
    inner: R,
    seen: Rc<RefCell<Vec<u8>>>,
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.borrow_mut().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// Reads like the underlying diff stream, failing at the first thing [`DiffReader`] refuses.
pub struct CheckedDiff<R: Read> {
    parser: Option<DiffReader<Recorder<R>>>,
    /// Bytes the parser accepted and we have not handed on yet, from `handed` on.
    seen: Rc<RefCell<Vec<u8>>>,
    handed: usize,
    in_payload: bool,
    scratch: Vec<u8>,
    failed: bool,
}

impl<R: Read> CheckedDiff<R> {
    /// Reads and checks the header; `expect` may refuse it (for example when its snapshot names
    /// are not the ones the file name promises) before a single byte is handed on.
    pub fn new(
        inner: R,
        expect: impl FnOnce(&DiffHeader) -> Result<(), String>,
    ) -> Result<CheckedDiff<R>, String> {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let recorder = Recorder {
            inner,
            seen: Rc::clone(&seen),
        };
        let parser = DiffReader::new(recorder).map_err(|e| e.to_string())?;
        expect(parser.header())?;
        Ok(CheckedDiff {
            parser: Some(parser),
            seen,
            handed: 0,
            in_payload: false,
            scratch: Vec::new(),
            failed: false,
        })
    }

    /// Lets the parser read one more piece of the stream.
    fn advance(&mut self) -> Result<(), DiffError> {
        let Some(parser) = self.parser.as_mut() else {
            return Ok(());
        };
        if self.in_payload {
            if self.scratch.is_empty() {
                self.scratch = vec![0u8; PAYLOAD_CHUNK];
            }
            // The payload reaches the recorder; the copy in `scratch` is not needed.
            if parser.read_data(&mut self.scratch)? == 0 {
                self.in_payload = false;
            }
            return Ok(());
        }
        match parser.next_record()? {
            Some(Record::Write { .. }) => self.in_payload = true,
            Some(Record::Zero { .. }) => {}
            None => {
                let parser = self.parser.take().expect("checked above");
                parser.finish()?;
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for CheckedDiff<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.failed {
                return Err(io::Error::other("the diff stream was refused"));
            }
            {
                let mut seen = self.seen.borrow_mut();
                let ready = seen.len() - self.handed;
                if ready > 0 {
                    let n = ready.min(buf.len());
                    buf[..n].copy_from_slice(&seen[self.handed..self.handed + n]);
                    self.handed += n;
                    if self.handed == seen.len() {
                        seen.clear();
                        self.handed = 0;
                    }
                    return Ok(n);
                }
            }
            if self.parser.is_none() {
                return Ok(0);
            }
            if let Err(err) = self.advance() {
                // The bytes of the refused record must never reach the consumer.
                self.failed = true;
                self.seen.borrow_mut().clear();
                return Err(match err {
                    DiffError::Io(io) if io.kind() != io::ErrorKind::Interrupted => io,
                    other => io::Error::new(io::ErrorKind::InvalidData, other),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{diff_stream, Rec};

    fn stream() -> Vec<u8> {
        let records = [
            Rec::W(4096, vec![7u8; 700_000]),
            Rec::Z(1 << 20, 4096),
            Rec::W(2 << 20, b"tail".to_vec()),
        ];
        diff_stream("a", "b", 8 << 20, &records)
    }

    fn pass(bytes: &[u8]) -> (Vec<u8>, io::Result<usize>) {
        let mut checked = CheckedDiff::new(bytes, |_| Ok(())).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            match checked.read(&mut buf) {
                Ok(0) => return (out, Ok(0)),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn a_good_stream_passes_unchanged() {
        let bytes = stream();
        let (out, end) = pass(&bytes);
        assert!(end.is_ok());
        assert!(out == bytes);
    }

    #[test]
    fn a_bad_record_is_never_handed_on() {
        let good = stream();
        // The zero record's tag follows the banner, both names, the size and the first write.
        let zero_at = 12 + 6 + 6 + 9 + 17 + 700_000;
        assert_eq!(good[zero_at], b'z');
        let mut bad_tag = good.clone();
        bad_tag[zero_at] = b'q';
        let mut trailing = good.clone();
        trailing.push(0);
        for (what, bytes, handed_at_most) in [
            ("unknown tag", bad_tag, zero_at),
            ("truncated", good[..good.len() - 1].to_vec(), good.len() - 1),
            ("data after the end", trailing, good.len()),
        ] {
            let (out, end) = pass(&bytes);
            assert!(end.is_err(), "{what}");
            assert!(
                out.len() <= handed_at_most,
                "{what}: {} bytes handed on",
                out.len()
            );
            assert_eq!(out[..], bytes[..out.len()], "{what}");
        }
    }

    #[test]
    fn the_header_can_be_refused() {
        let bytes = stream();
        let refused = CheckedDiff::new(&bytes[..], |h| {
            if h.from_snap.as_deref() == Some("x") {
                Ok(())
            } else {
                Err("wrong base".into())
            }
        });
        assert_eq!(refused.err().as_deref(), Some("wrong base"));
    }
}
