//! A backup folder: how its files are named, the one model of what it holds (chains, restore
//! points, strangers), the records the tool keeps in it, and how files are written to it and read
//! back from it on ground that other users may have touched. Every change to a folder goes through
//! its one door ([`door`]); the formats of the files themselves are in [`format`](mod@format).

pub mod access;
pub mod chain;
pub mod door;
pub mod format;
pub mod naming;
pub mod read;
pub mod record;
pub mod shared;
pub mod slide;
pub mod untrusted;
