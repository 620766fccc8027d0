//! The cluster: the one module that starts processes ([`process`]), what Ceph's tools say when
//! they fail ([`ceph`]: exit statuses, log lines, refused logins), and how each `rbd` verb is
//! spelled ([`rbd`]).

pub mod ceph;
pub mod process;
pub mod rbd;
