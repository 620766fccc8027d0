//! The seal on the tool's records: an HMAC-SHA256, under a key only this host holds (kept in its
//! state folder, [`crate::state`]), over everything a record says.
//!
//! A destination is untrusted ground: a user who can write there can place or rename any file
//! into an image folder, even one the tool itself wrote (a backup of a small image whose bytes
//! are record JSON). The owner and mode of a file prove nothing against that; only a code that
//! nobody without the key can compute does. A record whose seal is missing or wrong is not
//! believed, so no snapshot is ever removed on its account.
//!
//! The code covers the record's kind and a canonical form of its JSON (object keys sorted, no
//! white space), so it does not depend on how the file is laid out, and a record of one kind or
//! of one image cannot pass for another's.

use std::fs::File;
use std::io::Read;

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Sha256;

/// The field of a record's JSON object that carries its seal.
pub const SEAL_FIELD: &str = "seal";
/// Bytes in a key.
pub const KEY_BYTES: usize = 32;
/// Separates this use of the key from any other the tool may make of it later.
const DOMAIN: &[u8] = b"cephbackup record seal v1\0";

/// The secret that seals records. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey([u8; KEY_BYTES]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(…)")
    }
}

impl SealKey {
    pub fn new(bytes: [u8; KEY_BYTES]) -> SealKey {
        SealKey(bytes)
    }

    /// The key itself, to hand it to the hosts that share it ([`crate::state`]).
    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    fn mac(&self, kind: &str, body: &Map<String, Value>) -> Hmac<Sha256> {
        // Any key length is valid for HMAC; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(DOMAIN);
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        let mut canonical = Vec::new();
        write_canonical(&Value::Object(body.clone()), &mut canonical);
        mac.update(&canonical);
        mac
    }
}

/// Why a record's content is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    #[error(
        "carries no seal: written by a cephbackup version before record seals, or not by \
         cephbackup at all"
    )]
    Missing,
    #[error(
        "its seal does not match: written under another host's key (or before this host's state \
         folder was lost), or changed since"
    )]
    Wrong,
    #[error("is sealed, but this host has no record key yet, so the seal cannot be checked")]
    NoKey,
    #[error("not readable: {0}")]
    Unreadable(String),
}

/// The JSON text of `doc` with its seal, ready to be written.
pub fn seal(key: &SealKey, kind: &str, doc: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let Value::Object(mut body) = serde_json::to_value(doc)? else {
        return Err(serde::ser::Error::custom("a record must be a JSON object"));
    };
    body.remove(SEAL_FIELD);
    let code = key.mac(kind, &body).finalize().into_bytes();
    body.insert(SEAL_FIELD.to_string(), Value::String(hex(&code)));
    let mut text = serde_json::to_vec_pretty(&Value::Object(body))?;
    text.push(b'\n');
    Ok(text)
}

/// The record in `bytes`, when its seal proves that a holder of `key` wrote exactly this.
pub fn open<T: DeserializeOwned>(
    key: Option<&SealKey>,
    kind: &str,
    bytes: &[u8],
) -> Result<T, Unsealed> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|err| Unsealed::Unreadable(err.to_string()))?;
    let Value::Object(mut body) = value else {
        return Err(Unsealed::Unreadable("not a JSON object".into()));
    };
    let code = match body.remove(SEAL_FIELD) {
        Some(Value::String(code)) => code,
        Some(_) => return Err(Unsealed::Wrong),
        None => return Err(Unsealed::Missing),
    };
    let key = key.ok_or(Unsealed::NoKey)?;
    let code = unhex(&code).ok_or(Unsealed::Wrong)?;
    key.mac(kind, &body)
        .verify_slice(&code)
        .map_err(|_| Unsealed::Wrong)?;
    serde_json::from_value(Value::Object(body)).map_err(|err| Unsealed::Unreadable(err.to_string()))
}

/// JSON with every object's keys in sorted order and no white space: the same bytes for the same
/// content however the file was laid out or the map implementation orders keys.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(&map[key.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        // Scalars have one serialization each.
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 2 * KEY_BYTES || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

/// Fills `bytes` from the kernel's random source: for the key (kept by [`crate::state`]) and
/// for a new destination's identity.
pub fn random_bytes(bytes: &mut [u8]) -> Result<()> {
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(bytes))
        .context("cannot read random bytes from /dev/urandom")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        pool: String,
        image: String,
        pending: Vec<String>,
    }

    fn doc() -> Doc {
        Doc {
            pool: "rbd".into(),
            image: "vm".into(),
            pending: vec!["BACKUPUTC20261126T000000".into()],
        }
    }

    #[test]
    fn a_sealed_record_opens_only_under_its_key_and_kind_and_unchanged() {
        let key = SealKey::new([7; KEY_BYTES]);
        let text = seal(&key, "image", &doc()).unwrap();
        assert_eq!(open::<Doc>(Some(&key), "image", &text).unwrap(), doc());

        // Laid out differently, the same content still opens.
        let value: Value = serde_json::from_slice(&text).unwrap();
        let compact = serde_json::to_vec(&value).unwrap();
        assert_eq!(open::<Doc>(Some(&key), "image", &compact).unwrap(), doc());

        let other = SealKey::new([8; KEY_BYTES]);
        assert_eq!(
            open::<Doc>(Some(&other), "image", &text),
            Err(Unsealed::Wrong)
        );
        assert_eq!(
            open::<Doc>(Some(&key), "destination", &text),
            Err(Unsealed::Wrong)
        );
        assert_eq!(open::<Doc>(None, "image", &text), Err(Unsealed::NoKey));

        // Another image's name, or one more pending snapshot, breaks the seal.
        for (field, changed) in [
            ("image", Value::String("db".into())),
            (
                "pending",
                serde_json::json!(["BACKUPUTC20261126T000000", "BACKUPUTC20261127T000000"]),
            ),
        ] {
            let mut forged = value.clone();
            forged[field] = changed;
            let bytes = serde_json::to_vec(&forged).unwrap();
            assert_eq!(
                open::<Doc>(Some(&key), "image", &bytes),
                Err(Unsealed::Wrong),
                "{field}"
            );
        }

        let unsealed = serde_json::to_vec(&doc()).unwrap();
        assert_eq!(
            open::<Doc>(Some(&key), "image", &unsealed),
            Err(Unsealed::Missing)
        );
        let mut bad = value.clone();
        bad[SEAL_FIELD] = Value::String("zz".into());
        assert_eq!(
            open::<Doc>(Some(&key), "image", &serde_json::to_vec(&bad).unwrap()),
            Err(Unsealed::Wrong)
        );
        assert!(matches!(
            open::<Doc>(Some(&key), "image", b"[1]"),
            Err(Unsealed::Unreadable(_))
        ));
    }
}
