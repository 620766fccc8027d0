//! The cluster: the one module that starts processes ([`process`]) and how each `rbd` verb is
//! spelled, with its failures typed ([`rbd`]). The unit tests talk to an in-memory cluster
//! instead (`fake`, built for tests only).

#[cfg(test)]
pub(crate) mod fake;
pub mod process;
pub mod rbd;
