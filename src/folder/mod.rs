//! A backup folder: how its files are named, the one model of what it holds (chains, restore
//! points, strangers), the records the tool keeps in it, and how files are written to it and read
//! back from it on ground that other users may have touched. Every change to a folder goes through
//! its one door ([`door`]).

pub mod access;
pub mod advance;
pub mod archive;
pub mod chain;
pub mod checked_diff;
pub mod diffstream;
pub mod door;
pub mod naming;
pub mod read;
pub mod rebuild;
pub mod record;
pub mod shared;
pub mod sparse;
pub mod untar;
pub mod untrusted;
pub mod write;
