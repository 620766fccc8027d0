//! Progress bars on a terminal: bytes, rate and time left for the long streams (exports and their
//! compression, `verify` reading files, `restore` feeding them), drawn on stderr.
//!
//! Off unless [`enable`] was called, which `main` does only when stderr is a terminal and `-q`
//! was not given: cron mail, journald and log files never see a bar or an escape sequence. At
//! most one bar is drawn at a time; log lines written through [`LogWriter`] hide it while they
//! print, so a warning in the middle of an export is not torn apart by the redraw.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The bar being drawn now, so log lines can hide it while they print.
static CURRENT: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Turns bars on for the rest of the process (stderr is a terminal and nobody asked for quiet).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn current() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    CURRENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One bar for one stream; nothing at all when bars are off. Cleared when dropped.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar labelled `label`, of `total` bytes when known (a full export, a file), else a
    /// counter with the rate (a diff, whose length nobody knows in advance).
    pub fn new(label: &str, total: Option<u64>) -> Progress {
        if !enabled() {
            return Progress { bar: None };
        }
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:25}] {binary_bytes}/{binary_total_bytes} \
                         {binary_bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} {binary_bytes} {binary_bytes_per_sec} {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        *current() = Some(bar.clone());
        Progress { bar: Some(bar) }
    }

    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// Wraps `inner` so that every byte read moves this bar.
    pub fn reader<R: Read>(self, inner: R) -> Reader<R> {
        Reader {
            inner,
            progress: self,
        }
    }
}

impl Progress {
    /// Clears the bar; later calls and the drop do nothing more.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            // One bar at a time: the one ending is the one drawn.
            *current() = None;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A stream that moves a bar as it is read; see [`reader`].
pub struct Reader<R> {
    inner: R,
    progress: Progress,
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            // The end: the bar goes now, before whatever is printed about the finished stream.
            self.progress.finish();
        }
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// `inner` with a bar labelled `label` of `total` bytes (when known) moving as it is read; the
/// bar goes when the reader is dropped. With bars off, only a pass-through.
pub fn reader<R: Read>(inner: R, total: Option<u64>, label: &str) -> Reader<R> {
    Progress::new(label, total).reader(inner)
}

/// stderr for log lines: hides the bar being drawn while a line prints.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = current().clone();
        match bar {
            Some(bar) => bar.suspend(|| io::stderr().write(buf)),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// A duration for summary lines: `0.4 s`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn duration(took: Duration) -> String {
    let seconds = took.as_secs();
    if seconds < 60 {
        format!("{:.1} s", took.as_secs_f64())
    } else if seconds < 3600 {
        format!("{} min {:02} s", seconds / 60, seconds % 60)
    } else {
        format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_means_a_plain_pass_through() {
        let data = vec![5u8; 100_000];
        let mut read = Vec::new();
        reader(&data[..], Some(100_000), "x")
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, data);
        assert!(Progress::new("y", None).bar.is_none());
    }

    #[test]
    fn durations_for_people() {
        for (seconds, text) in [
            (0.42, "0.4 s"),
            (12.34, "12.3 s"),
            (245.0, "4 min 05 s"),
            (7380.0, "2 h 03 min"),
        ] {
            assert_eq!(duration(Duration::from_secs_f64(seconds)), text);
        }
    }
}
