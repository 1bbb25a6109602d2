//! Key files: the host keys, and the first-run client key.
//!
//! Invariants: private keys are created with mode 0600 and refused if group-
//! or world-accessible (as sshd does, `sshkey_perm_ok`); key material is
//! never logged, only SHA-256 fingerprints.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::{HashAlg, LineEnding};
use russh::keys::{Algorithm, PrivateKey, PublicKey};

use crate::auth::{InvalidUserName, User, UserName, read_authorized_keys};

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Group or others may read the private key.
    #[error("{path} is accessible by others (mode {mode:o}) (run: chmod 600 {path})")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading, parsing or writing failed.
    #[error("{path}: {reason}")]
    File {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// First-run mode logs in as the OS user, whose name is not one.
    #[error(
        "{0}: the OS user's name cannot be a login name (add a [[users]] entry to server.toml)"
    )]
    OsUserName(#[from] InvalidUserName),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Loads the private key at `path`, or generates one there (and its
/// directory) with mode 0600 if there is none: ECDSA P-256 when the file
/// name says `ecdsa` (`ssh_host_ecdsa_key`, as sshd names it; for clients
/// such as JSch 0.1.x that have no Ed25519), else Ed25519. Returns the key
/// and whether it was generated.
///
/// # Errors
/// [`KeyError::Permissions`] for a key others can read, [`KeyError::File`]
/// for an unreadable, unparsable or unwritable file.
pub fn load_or_generate(path: &Path) -> Result<(PrivateKey, bool), KeyError> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_owned(),
                    mode,
                });
            }
            let key = russh::keys::load_secret_key(path, None).map_err(|e| file_error(path, e))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
            }
            let key = PrivateKey::random(&mut rand::rng(), generated_algorithm(path))
                .map_err(|e| file_error(path, e))?;
            // ssh-key creates the file with mode 0600.
            key.write_openssh_file(path, LineEnding::LF)
                .map_err(|e| file_error(path, e))?;
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| file_error(path, e))?;
            let pub_path = path.with_extension("pub");
            std::fs::write(&pub_path, format!("{public} keepsh\n"))
                .map_err(|e| file_error(&pub_path, e))?;
            Ok((key, true))
        }
        Err(e) => Err(file_error(path, e)),
    }
}

/// The type of key generated for a missing file at `path`.
fn generated_algorithm(path: &Path) -> Algorithm {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
    if name.is_some_and(|n| n.contains("ecdsa")) {
        Algorithm::Ecdsa {
            curve: russh::keys::EcdsaCurve::NistP256,
        }
    } else {
        Algorithm::Ed25519
    }
}

/// The SHA-256 fingerprint as OpenSSH prints it (`SHA256:...`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// First-run credentials: with no `[[users]]` configured, the OS user
/// running keepsh may log in as itself with the keys of its own
/// `~/.ssh/authorized_keys`. If it has none, a client key is generated at
/// `keys_dir/client_ed25519_key` and trusted. Returns the user and, when the
/// generated key is the credential, its path (to print the `ssh -i` command).
///
/// # Errors
/// [`KeyError`] if the client key cannot be created, or the OS user's
/// name is not a valid [`UserName`].
pub fn first_run_user(keys_dir: &Path) -> Result<(User, Option<PathBuf>), KeyError> {
    let name: UserName = os_user_name().parse()?;
    let home = home_dir();
    let mut user = User {
        name,
        password_hash: None,
        authorized_keys: Vec::new(),
        authorized_keys_file: None,
    };
    if let Some(home) = home {
        let file = home.join(".ssh/authorized_keys");
        if read_authorized_keys(&file).is_ok_and(|keys| !keys.is_empty()) {
            user.authorized_keys_file = Some(file);
            return Ok((user, None));
        }
    }
    let path = keys_dir.join("client_ed25519_key");
    let (key, _) = load_or_generate(&path)?;
    user.authorized_keys.push(key.public_key().clone());
    Ok((user, Some(path)))
}

/// The name of the OS user running keepsh (from the password database,
/// falling back to `$USER`).
pub fn os_user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "user".into())
}

/// The home directory: `$HOME`, else the password database's.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
}

/// The OS user's login shell from the password database, else `/bin/sh`.
pub fn login_shell() -> PathBuf {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.shell)
        .filter(|s| s.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_host_key_is_generated_private_and_then_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/host");
        let (key, generated) = load_or_generate(&path).expect("generate");
        assert!(generated);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, generated) = load_or_generate(&path).expect("load");
        assert!(!generated);
        assert_eq!(
            fingerprint(key.public_key()),
            fingerprint(again.public_key())
        );
    }

    #[test]
    fn a_missing_ecdsa_host_key_is_generated_as_p256() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ssh_host_ecdsa_key");
        let (key, generated) = load_or_generate(&path).expect("generate");
        assert!(generated);
        assert_eq!(
            key.algorithm(),
            Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256
            }
        );
        let (again, _) = load_or_generate(&path).expect("load");
        assert_eq!(again.algorithm(), key.algorithm());
    }

    #[test]
    fn a_readable_host_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host");
        load_or_generate(&path).expect("generate");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_or_generate(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
