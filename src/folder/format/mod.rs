//! The formats of the backup files themselves, apart from the folder that holds them: the tar
//! archives the tool writes and reads ([`archive`], [`untar`], zstd's seekable format in
//! [`seekable`]), the `rbd diff v1` stream
//! ([`diffstream`], checked against its file name in [`checked_diff`]), sparse raw files
//! ([`sparse`]), a point rebuilt from its chain ([`rebuild`]), the writers that stream an export
//! into a file with its checksum ([`write`](mod@write)), and age encryption ([`encrypt`]).

pub mod archive;
pub mod checked_diff;
pub mod diffstream;
pub mod encrypt;
pub mod point_map;
pub mod rebuild;
pub mod seekable;
pub mod sparse;
pub mod untar;
pub mod write;
