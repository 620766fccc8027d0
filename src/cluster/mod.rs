//! The cluster: the one module that starts processes ([`process`]: `rbd`, `tar`, the
//! administrator's hooks), what Ceph's tools say when they fail ([`ceph`]: exit statuses, log
//! lines, refused logins), how each `rbd` verb is spelled ([`rbd`]), and the one `rados` query
//! ([`rados`]). The unit tests talk to an in-memory cluster instead (`fake`, built for tests
//! only); check mode to its twin that changes nothing ([`check`]).

pub mod ceph;
pub mod check;
#[cfg(test)]
pub(crate) mod fake;
pub mod process;
pub mod rados;
pub mod rbd;
