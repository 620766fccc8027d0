//! The cluster: the one module that starts processes ([`process`]) and how each `rbd` verb is
//! spelled, with its failures typed ([`rbd`]).

pub mod process;
pub mod rbd;
