//! The cluster: the one module that starts processes ([`process`]) and how each `rbd` verb is
//! spelled, with its failures typed ([`rbd`]). The unit tests talk to an in-memory cluster
//! instead (`fake`, built for tests only); check mode to its twin that changes nothing ([`check`]).

pub mod check;
#[cfg(test)]
pub(crate) mod fake;
pub mod process;
pub mod rbd;
