//! One backup file streamed into a bucket as a multipart upload: parts sent while the next
//! fills, published whole, taken back when dropped unfinished.

use std::io::{self, Write};
use std::sync::Arc;

use super::S3Bucket;
use crate::folder::door::Upload;

/// The size of an upload's first parts: what an upload holds in memory. A long upload takes
/// larger parts as it goes ([`part_size`]), since S3 takes at most [`MAX_PARTS`].
pub const PART: usize = 8 * 1024 * 1024;

/// S3's most parts in one upload.
const MAX_PARTS: usize = 10_000;

/// How many parts go at each size before the next part size (double) is taken, up to 64 MiB:
/// 8, 16 and 32 MiB for 1,000 parts each, then 64 MiB, about 490 GiB in all.
const PARTS_PER_SIZE: usize = 1_000;
const MAX_PART: usize = 64 * 1024 * 1024;

/// The size of part `number` (from 1) of an upload: small parts keep a small file's upload
/// small, larger ones let a large image fit in S3's most parts, without knowing its size first.
fn part_size(number: usize) -> usize {
    let doublings = ((number.max(1) - 1) / PARTS_PER_SIZE).min(3);
    (PART << doublings).min(MAX_PART)
}

/// A backup file on its way into a bucket: a multipart upload fed part by part. Full parts go
/// to [`SENDERS`] threads that send them while the next one fills, so the upload holds at most
/// `SENDERS + 1` parts in memory.
pub struct S3Upload {
    bucket: Arc<S3Bucket>,
    name: String,
    key: String,
    id: String,
    /// The part being filled.
    part: Vec<u8>,
    /// How many parts were handed to the senders.
    handed: usize,
    size: u64,
    senders: Option<PartSenders>,
    /// The parts' ETags, once all were sent.
    etags: Option<Vec<String>>,
    completed: bool,
}

/// How many parts are sent at once.
const SENDERS: usize = 2;

/// The threads sending an upload's parts, fed through a hand-over with no room: a part waits in
/// the writer's hands until a sender is free.
struct PartSenders {
    hand_over: std::sync::mpsc::SyncSender<(u16, Vec<u8>)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    sent: Arc<std::sync::Mutex<SentParts>>,
}

#[derive(Default)]
struct SentParts {
    etags: std::collections::BTreeMap<u16, String>,
    /// The first failure: no part is sent after it.
    failure: Option<(io::ErrorKind, String)>,
}

impl PartSenders {
    fn start(bucket: &Arc<S3Bucket>, key: &str, id: &str) -> PartSenders {
        let (hand_over, parts) = std::sync::mpsc::sync_channel::<(u16, Vec<u8>)>(0);
        let parts = Arc::new(std::sync::Mutex::new(parts));
        let sent = Arc::new(std::sync::Mutex::new(SentParts::default()));
        let threads = (0..SENDERS)
            .map(|_| {
                let (bucket, key, id) = (Arc::clone(bucket), key.to_string(), id.to_string());
                let (parts, sent) = (Arc::clone(&parts), Arc::clone(&sent));
                std::thread::spawn(move || loop {
                    let next = parts
                        .lock()
                        .map_err(drop)
                        .and_then(|p| p.recv().map_err(drop));
                    let Ok((number, bytes)) = next else { return };
                    if sent.lock().is_ok_and(|s| s.failure.is_some()) {
                        continue;
                    }
                    let result = bucket.upload_part(&key, &id, number, &bytes);
                    drop(bytes);
                    if let Ok(mut sent) = sent.lock() {
                        match result {
                            Ok(etag) => drop(sent.etags.insert(number, etag)),
                            Err(err) => {
                                let message = format!("part {number}: {err}");
                                sent.failure.get_or_insert((err.kind(), message));
                            }
                        }
                    }
                })
            })
            .collect();
        PartSenders {
            hand_over,
            threads,
            sent,
        }
    }

    /// The first failure of a sender, as an error.
    fn failure(&self) -> io::Result<()> {
        let sent = self
            .sent
            .lock()
            .map_err(|_| io::Error::other("a part sender failed"))?;
        match &sent.failure {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    fn send(&self, number: u16, part: Vec<u8>) -> io::Result<()> {
        self.failure()?;
        self.hand_over
            .send((number, part))
            .map_err(|_| io::Error::other("the part senders stopped"))
    }

    /// Waits for every part handed over; their ETags in order, or the first failure.
    fn finish(self, parts: usize) -> io::Result<Vec<String>> {
        drop(self.hand_over);
        for thread in self.threads {
            thread
                .join()
                .map_err(|_| io::Error::other("a part sender panicked"))?;
        }
        let mut sent = self
            .sent
            .lock()
            .map_err(|_| io::Error::other("a part sender failed"))?;
        if let Some((kind, message)) = sent.failure.take() {
            return Err(io::Error::new(kind, message));
        }
        let etags: Vec<String> = std::mem::take(&mut sent.etags).into_values().collect();
        if etags.len() != parts {
            return Err(io::Error::other(format!(
                "{} of {parts} parts were sent",
                etags.len()
            )));
        }
        Ok(etags)
    }
}

impl S3Upload {
    pub(super) fn new(bucket: &Arc<S3Bucket>, name: &str, key: String, id: String) -> S3Upload {
        S3Upload {
            senders: Some(PartSenders::start(bucket, &key, &id)),
            bucket: Arc::clone(bucket),
            name: name.to_string(),
            key,
            id,
            part: Vec::with_capacity(PART),
            handed: 0,
            size: 0,
            etags: None,
            completed: false,
        }
    }

    fn send_part(&mut self) -> io::Result<()> {
        let number = u16::try_from(self.handed + 1)
            .ok()
            .filter(|&n| usize::from(n) <= MAX_PARTS)
            .ok_or_else(|| io::Error::other(format!("more than {MAX_PARTS} parts")))?;
        let senders = self
            .senders
            .as_ref()
            .ok_or_else(|| io::Error::other("the upload was finished"))?;
        let next = Vec::with_capacity(part_size(self.handed + 2));
        let part = std::mem::replace(&mut self.part, next);
        self.size += part.len() as u64;
        senders.send(number, part)?;
        self.handed += 1;
        Ok(())
    }

    /// The size the part being filled is sent at.
    fn part_size(&self) -> usize {
        part_size(self.handed + 1)
    }

    /// Stops the senders, after the parts they hold; the ETags of all parts, in order.
    fn finish_sending(&mut self) -> io::Result<Vec<String>> {
        match self.senders.take() {
            Some(senders) => senders.finish(self.handed),
            None => Err(io::Error::other("the upload was finished")),
        }
    }
}

impl Write for S3Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.part_size() - self.part.len();
        let taken = buf.len().min(room);
        self.part.extend_from_slice(&buf[..taken]);
        if self.part.len() == self.part_size() {
            self.send_part()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Upload for S3Upload {
    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> &str {
        &self.id
    }

    /// Sends the last part and waits until every part is there.
    fn send_rest(&mut self) -> io::Result<()> {
        if self.etags.is_some() {
            return Ok(());
        }
        // An empty object is one empty part.
        if !self.part.is_empty() || self.handed == 0 {
            self.send_part()?;
        }
        self.etags = Some(self.finish_sending()?);
        Ok(())
    }

    fn complete(mut self: Box<Self>) -> io::Result<u64> {
        self.send_rest()?;
        let etags = self.etags.take().unwrap_or_default();
        self.bucket.complete_upload(&self.key, &self.id, &etags)?;
        self.completed = true;
        Ok(self.size)
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if let Some(senders) = self.senders.take() {
            // Their parts are lost anyway: only waited for, so that the abort comes last.
            let _ = senders.finish(self.handed);
        }
        if !self.completed {
            // Best effort: the image's record still names the upload for the next run.
            if let Err(err) = self.bucket.abort_upload(&self.key, &self.id) {
                tracing::debug!("cannot abort the upload {} of {}: {err}", self.id, self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_that_ten_thousand_carry_hundreds_of_gigabytes() {
        assert_eq!(part_size(1), PART);
        assert_eq!(part_size(1000), PART);
        assert_eq!(part_size(1001), 2 * PART);
        assert_eq!(part_size(3001), MAX_PART);
        assert_eq!(part_size(MAX_PARTS), MAX_PART);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size(n) as u64).sum();
        assert!(total > 480 << 30, "{total}");
    }
}
