//! Integration tests of the `cephbackup` binary against a real, throwaway Ceph cluster.
//!
//! One binary, so the cluster is started once; see `harness.rs`.

#![allow(clippy::disallowed_methods)] // tests drive the real binary, rbd, ceph and tar directly

mod harness;

mod backup;
mod chains;
mod check_mode;
mod compression;
mod config_errors;
mod encryption;
mod faults;
mod hooks;
mod host_state;
mod hostile_backup;
mod hostile_read;
mod hosts;
mod list;
mod monitoring;
mod mount;
mod operations;
mod parallel;
mod proof;
mod rbd_life;
mod report;
mod restore;
mod retention;
mod s3;
mod selection;
mod slide;
mod verify;
mod waiting;
