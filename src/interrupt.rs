//! Stopping cleanly on SIGINT and SIGTERM.
//!
//! The first signal is remembered and every running `rbd` is asked to stop; the executor then
//! notices at its next step, removes what the interrupted image left half done (its temporary file,
//! the snapshot this run created) and skips the remaining images. The process exits with 128 plus
//! the signal number, as shells do. A second signal ends the process at once, for the case where
//! the clean-up itself hangs; what it leaves behind is cleaned up by the next run.

use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cluster::process;

static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Starts watching for SIGINT and SIGTERM.
pub fn install() -> Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if RECEIVED.swap(signal, Ordering::SeqCst) != 0 {
                std::process::exit(128 + signal);
            }
            tracing::warn!("{}: stopping after cleaning up", name(signal));
            process::terminate_children();
        }
    });
    Ok(())
}

/// The signal that asked us to stop, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// The error an image's work ends with when a signal arrived.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}", name(*.0))]
pub struct Interrupted(pub i32);

/// Fails with [`Interrupted`] once a signal has arrived.
pub fn check() -> Result<(), Interrupted> {
    match received() {
        Some(signal) => Err(Interrupted(signal)),
        None => Ok(()),
    }
}
