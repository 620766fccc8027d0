//! Backing up: the executor that carries a configuration out image by image, the pure planner
//! that decides what one run does to one image, the retention policies it applies, the
//! snapshot limit it keeps to.

pub mod destination;
pub mod execute;
pub mod plan;
pub mod retention;
pub mod snap_limit;
