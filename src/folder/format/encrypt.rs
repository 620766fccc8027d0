//! Backup files encrypted to age recipients (`encrypt to`). The backup host holds public keys
//! only: neither it nor the destination can give an image back. Reading one takes the matching
//! private key (`--identity`). The files are plain age files (X25519 recipients), so the `age`
//! command opens them too.

use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use age::stream::{StreamReader, StreamWriter};

use crate::folder::untrusted;

/// The largest file of recipients or identities read: a few lines each, in practice.
const MAX_KEYS_FILE: u64 = 64 * 1024;
/// The most recipients one file may name: each adds a stanza to every file's header.
pub const MAX_RECIPIENTS: usize = 64;

/// The public keys new backup files are encrypted to: at least one `age1…` X25519 key, kept in
/// their canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipients(Vec<String>);

impl Recipients {
    /// Reads `encrypt to`: an `age1…` key, or the absolute path of a file of them (one a line,
    /// `#` comments), which only this user may change (whoever could would choose who reads
    /// the backups).
    pub fn parse(text: &str) -> Result<Recipients, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(
                "no recipient given (an age1… public key, or the path of a file of them)".into(),
            );
        }
        if text.starts_with("age1") {
            return Ok(Recipients(vec![recipient(text)?]));
        }
        let path = Path::new(text);
        if !path.is_absolute() {
            return Err(format!(
                "{text:?} is neither an age1… public key nor the absolute path of a file of them"
            ));
        }
        let lines = key_lines(path, 0)?;
        if lines.len() > MAX_RECIPIENTS {
            return Err(format!(
                "{} names {} recipients; at most {MAX_RECIPIENTS} are taken",
                path.display(),
                lines.len()
            ));
        }
        let keys = lines
            .into_iter()
            .map(|(number, line)| {
                recipient(&line).map_err(|err| format!("{}:{number}: {err}", path.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Recipients(keys))
    }

    /// Wraps `out` in a writer that encrypts what it is given to these recipients. Its
    /// [`StreamWriter::finish`] must be called, or the file is cut short.
    pub fn encrypt<W: Write>(&self, out: W) -> io::Result<StreamWriter<W>> {
        let keys = self
            .0
            .iter()
            .map(|key| age::x25519::Recipient::from_str(key).map_err(io::Error::other))
            .collect::<io::Result<Vec<_>>>()?;
        age::Encryptor::with_recipients(keys.iter().map(|key| key as &dyn age::Recipient))
            .map_err(io::Error::other)?
            .wrap_output(out)
    }
}

fn recipient(text: &str) -> Result<String, String> {
    age::x25519::Recipient::from_str(text)
        .map(|key| key.to_string())
        .map_err(|_| format!("{text:?} is not an age X25519 public key (age1…)"))
}

/// The non-empty, non-comment lines of a key file, with their numbers (1-based). `forbidden`
/// adds mode bits the file may not have (0o077 for a private key) to group and world write.
fn key_lines(path: &Path, forbidden: u32) -> Result<Vec<(usize, String)>, String> {
    let bytes = match untrusted::read_owned(path, MAX_KEYS_FILE, forbidden) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(format!("{}: no such file", path.display())),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not text", path.display()))?;
    let lines: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim().to_string()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .collect();
    if lines.is_empty() {
        return Err(format!("{} holds no key", path.display()));
    }
    Ok(lines)
}

/// The private keys that open backup files: an identity file as `age-keygen` writes it
/// (`AGE-SECRET-KEY-1…` lines, `#` comments), which nobody but this user may read.
pub struct Identities(Vec<age::x25519::Identity>);

impl Identities {
    pub fn read(path: &Path) -> Result<Identities, String> {
        let keys = key_lines(path, 0o077)?
            .into_iter()
            .map(|(number, line)| {
                age::x25519::Identity::from_str(&line).map_err(|_| {
                    format!(
                        "{}:{number}: not an age X25519 private key (AGE-SECRET-KEY-1…)",
                        path.display()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Identities(keys))
    }

    /// The clear bytes of the age file `input`: fails when none of these keys opens it, and
    /// mid-stream when its bytes were changed.
    pub fn decrypt<R: Read>(&self, input: R) -> io::Result<StreamReader<R>> {
        let decryptor = age::Decryptor::new(input).map_err(not_age)?;
        decryptor
            .decrypt(self.0.iter().map(|key| key as &dyn age::Identity))
            .map_err(not_age)
    }
}

/// The private keys of this run (`--identity`), set once before any file is read.
static IDENTITIES: OnceLock<Identities> = OnceLock::new();

/// Makes `identities` the keys every encrypted file of this run is read with.
pub fn use_identities(identities: Identities) {
    // Set once, from the command line; a second call could only repeat it.
    let _ = IDENTITIES.set(identities);
}

/// [`use_identities`] of the identity file `path` (`--identity`), when one is given.
pub fn use_identity_file(path: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = path {
        let identities =
            Identities::read(path).map_err(|err| anyhow::anyhow!("--identity: {err}"))?;
        use_identities(identities);
    }
    Ok(())
}

/// The keys [`use_identities`] gave, if any.
pub fn identities() -> Option<&'static Identities> {
    IDENTITIES.get()
}

/// Reading an encrypted file without a private key.
#[derive(Debug, thiserror::Error)]
#[error("it is encrypted: reading it takes the private key it was encrypted to (--identity FILE)")]
pub struct NoIdentity;

/// The most header bytes an age file may have before its payload: a stanza per recipient, each
/// well under 200 bytes, for at most [`MAX_RECIPIENTS`], and the MAC.
pub const MAX_HEADER: u64 = 64 * 1024;
/// age's payload: chunks of this many clear bytes, each followed by a 16-byte tag.
const CHUNK: u64 = 64 * 1024;
const TAG: u64 = 16;

/// The clear bytes of an age payload (what follows the header and nonce) of `payload` bytes:
/// every chunk, the last (possibly empty) one included, carries a tag.
pub fn clear_len(payload: u64) -> u64 {
    let chunks = payload.div_ceil(CHUNK + TAG).max(1);
    payload.saturating_sub(chunks * TAG)
}

/// Reads the header of the age file `input` (all that can be checked without a private key).
pub fn check_header(input: impl Read) -> io::Result<()> {
    age::Decryptor::new(input).map(drop).map_err(not_age)
}

fn not_age(err: age::DecryptError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("age: {err}"))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests write their key files
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn key_pair() -> (String, String) {
        let identity = age::x25519::Identity::generate();
        let public = identity.to_public().to_string();
        let secret = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string();
        (public, secret)
    }

    fn write_key_file(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn what_is_encrypted_to_a_recipient_opens_with_its_identity_only() {
        let dir = tempfile::tempdir().unwrap();
        let (public, secret) = key_pair();
        let (other_public, other_secret) = key_pair();
        let recipients = Recipients::parse(&format!("  {public} ")).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut writer = recipients.encrypt(Vec::new()).unwrap();
        writer.write_all(&data).unwrap();
        let sealed = writer.finish().unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        check_header(&sealed[..]).unwrap();

        let mine = write_key_file(dir.path(), "mine", &format!("# created\n{secret}\n"), 0o600);
        let mut clear = Vec::new();
        Identities::read(&mine)
            .unwrap()
            .decrypt(&sealed[..])
            .unwrap()
            .read_to_end(&mut clear)
            .unwrap();
        assert_eq!(clear, data);

        let theirs = write_key_file(dir.path(), "theirs", &other_secret, 0o600);
        let err = Identities::read(&theirs)
            .unwrap()
            .decrypt(&sealed[..])
            .err()
            .unwrap();
        assert!(err.to_string().contains("age:"), "{err}");

        // A file of recipients: every one of them opens it.
        let both = write_key_file(
            dir.path(),
            "recipients",
            &format!("{public}\n\n# backup office\n{other_public}\n"),
            0o644,
        );
        let recipients = Recipients::parse(both.to_str().unwrap()).unwrap();
        let mut writer = recipients.encrypt(Vec::new()).unwrap();
        writer.write_all(b"x").unwrap();
        let sealed = writer.finish().unwrap();
        for key in [&mine, &theirs] {
            let mut clear = Vec::new();
            let reader = Identities::read(key).unwrap().decrypt(&sealed[..]).unwrap();
            reader.take(10).read_to_end(&mut clear).unwrap();
            assert_eq!(clear, b"x");
        }
    }

    #[test]
    fn the_clear_length_follows_from_the_stored_one() {
        for len in [0usize, 1, 65_535, 65_536, 65_537, 3 * 65_536, 200_001] {
            let mut writer = Recipients::parse(&key_pair().0)
                .unwrap()
                .encrypt(Vec::new())
                .unwrap();
            writer.write_all(&vec![1u8; len]).unwrap();
            let sealed = writer.finish().unwrap();
            // The header ends with its MAC line; the 16-byte nonce follows it.
            let header = sealed.windows(4).position(|w| w == b"--- ").unwrap();
            let header = header + sealed[header..].iter().position(|&b| b == b'\n').unwrap() + 1;
            let payload = (sealed.len() - header - 16) as u64;
            assert_eq!(clear_len(payload), len as u64, "{len}");
        }
    }

    #[test]
    fn a_changed_byte_fails_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let (public, secret) = key_pair();
        let mut writer = Recipients::parse(&public)
            .unwrap()
            .encrypt(Vec::new())
            .unwrap();
        writer.write_all(&vec![7u8; 100_000]).unwrap();
        let mut sealed = writer.finish().unwrap();
        let last = sealed.len() - 10;
        sealed[last] ^= 1;
        let key = write_key_file(dir.path(), "key", &secret, 0o600);
        let mut reader = Identities::read(&key)
            .unwrap()
            .decrypt(&sealed[..])
            .unwrap();
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(check_header(&b"not age"[..]).is_err());
    }

    #[test]
    fn bad_recipients_and_identities_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (public, secret) = key_pair();
        let cases = [
            ("", "no recipient given".to_string()),
            (
                "age1nope",
                "\"age1nope\" is not an age X25519 public key".to_string(),
            ),
            (
                "keys.txt",
                "neither an age1… public key nor the absolute path".to_string(),
            ),
            (
                "/nonexistent/keys",
                "/nonexistent/keys: no such file".to_string(),
            ),
        ];
        for (text, expected) in cases {
            let err = Recipients::parse(text).unwrap_err();
            assert!(err.contains(&expected), "{text:?}: {err}");
        }
        let bad_line = write_key_file(
            dir.path(),
            "r",
            &format!("{public}\nssh-ed25519 AAAA\n"),
            0o644,
        );
        let err = Recipients::parse(bad_line.to_str().unwrap()).unwrap_err();
        assert!(
            err.contains(&format!("{}:2: ", bad_line.display())),
            "{err}"
        );
        let writable = write_key_file(dir.path(), "w", &public, 0o666);
        let err = Recipients::parse(writable.to_str().unwrap()).unwrap_err();
        assert!(err.starts_with("cannot read"), "{err}");
        let empty = write_key_file(dir.path(), "e", "# nothing\n", 0o644);
        let err = Recipients::parse(empty.to_str().unwrap()).unwrap_err();
        assert!(err.contains("holds no key"), "{err}");
        let many: String = (0..=MAX_RECIPIENTS)
            .map(|_| format!("{public}\n"))
            .collect();
        let many = write_key_file(dir.path(), "m", &many, 0o644);
        let err = Recipients::parse(many.to_str().unwrap()).unwrap_err();
        assert!(err.contains("at most 64"), "{err}");

        // A private key others may read is not used.
        let readable = write_key_file(dir.path(), "k", &secret, 0o640);
        assert!(Identities::read(&readable).is_err());
        let public_as_secret = write_key_file(dir.path(), "p", &public, 0o600);
        let err = Identities::read(&public_as_secret).err().unwrap();
        assert!(err.contains(":1: not an age X25519 private key"), "{err}");
    }
}
