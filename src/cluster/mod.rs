//! The cluster: the one module that starts processes ([`process`]), what Ceph's tools say when
//! they fail ([`ceph`]: exit statuses, log lines, refused logins), and how each `rbd` verb is
//! spelled ([`rbd`]). The unit tests talk to an in-memory cluster instead (`fake`, built for
//! tests only).

pub mod ceph;
#[cfg(test)]
pub(crate) mod fake;
pub mod process;
pub mod rbd;
