//! stdout for what the user asked for, written so that a closed or broken stdout never panics.
//!
//! `println!` panics when stdout is gone (`cephbackup | head -1`, a journald restart), which would
//! stop a backup half way. Here the first failed write turns stdout off for the rest of the process:
//! the work goes on, and only the printing stops.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one formatted chunk to stdout and flushes it (so our lines come before the output of a
/// child started next); after the first failure, writes nothing.
pub fn write(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// True once a write to stdout has failed.
pub fn is_closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// `println!` that never panics: see [`crate::output`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that never panics: see [`crate::output`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}
