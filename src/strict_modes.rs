//! StrictModes, as sshd_config(5) has it: keepsh trusts `server.toml`
//! (users, password hashes, what to run), its host keys, the users'
//! `authorized_keys_file`s and its state directory, so it refuses to start
//! when someone else could change one of them: when the file, or any
//! directory above it up to `/`, is writable by its group or by others, or
//! is owned by neither root nor the user keepsh runs as (OpenSSH's
//! `safe_path`). A directory with the sticky bit (`/tmp`, mode 1777) is
//! accepted writable: others may not rename or remove what is not theirs
//! in it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;

/// A path keepsh trusts that others could change.
#[derive(Debug, thiserror::Error)]
pub enum ModesError {
    /// Writable by its group or by others.
    #[error(
        "{path} is writable by {who} (mode {mode:04o}), who could change what keepsh trusts (run: chmod go-w {path})"
    )]
    Writable {
        /// The file or directory.
        path: PathBuf,
        /// "its group", "others", or "its group and others".
        who: &'static str,
        /// Its permission bits.
        mode: u32,
    },
    /// Owned by another user than root and the one keepsh runs as.
    #[error(
        "{path} is owned by uid {owner}, neither root nor the user keepsh runs as (uid {uid}) (run: chown {uid} {path}, or move it)"
    )]
    Owner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The user keepsh runs as.
        uid: u32,
    },
}

/// Checks `path` and every directory above it up to `/` (symbolic links
/// resolved). A path that does not exist yet (a host key keepsh is about to
/// generate) is checked from the nearest directory that does.
///
/// # Errors
/// The first component others could change, nearest to `path` first.
pub fn check(path: &Path) -> Result<(), ModesError> {
    let uid = nix::unistd::geteuid().as_raw();
    let mut existing = path;
    let resolved = loop {
        match existing.canonicalize() {
            Ok(resolved) => break resolved,
            Err(_) => match existing.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
                _ => return Ok(()),
            },
        }
    };
    for component in resolved.ancestors() {
        let Ok(meta) = std::fs::metadata(component) else {
            continue;
        };
        let path = || component.to_owned();
        if meta.uid() != 0 && meta.uid() != uid {
            return Err(ModesError::Owner {
                path: path(),
                owner: meta.uid(),
                uid,
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            _ if sticky_dir => None,
            (true, true) => Some("its group and others"),
            (true, false) => Some("its group"),
            (false, true) => Some("others"),
            (false, false) => None,
        };
        if let Some(who) = who {
            return Err(ModesError::Writable {
                path: path(),
                who,
                mode,
            });
        }
    }
    Ok(())
}

/// Checks the configuration file at `config_path` and what `config` names
/// (host keys, `authorized_keys_file`s, the state directory). Returns a
/// warning when the file, which holds password hashes, may be read by
/// others.
///
/// # Errors
/// As [`check`], for the first path that fails.
pub fn check_config(config_path: &Path, config: &Config) -> Result<Option<String>, ModesError> {
    check(config_path)?;
    for key in &config.server.host_keys {
        check(key)?;
    }
    for file in config
        .users
        .iter()
        .filter_map(|u| u.authorized_keys_file.as_ref())
    {
        check(file)?;
    }
    check(&config.server.state_dir)?;
    let hashes = config.users.iter().any(|u| u.password_hash.is_some());
    let mode = std::fs::metadata(config_path).map_or(0, |m| m.permissions().mode());
    Ok((hashes && mode & 0o004 != 0).then(|| {
        format!(
            "{} holds password hashes and is readable by others (mode {:04o}) (run: chmod o-r {})",
            config_path.display(),
            mode & 0o7777,
            config_path.display()
        )
    }))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_file_or_a_directory_above_it_that_others_may_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).expect("mkdir");
        let key = keys.join("host_key");
        std::fs::write(&key, "key").expect("write");
        chmod(&key, 0o600);
        chmod(&keys, 0o700);
        check(&key).expect("private");
        // Not there yet: its directory is what counts.
        check(&keys.join("new_key")).expect("private directory");

        chmod(&key, 0o666);
        let error = check(&key).unwrap_err().to_string();
        let key_path = key.canonicalize().expect("canonical");
        assert_eq!(
            error,
            format!(
                "{p} is writable by its group and others (mode 0666), who could change what keepsh trusts (run: chmod go-w {p})",
                p = key_path.display()
            )
        );
        chmod(&key, 0o600);
        chmod(&keys, 0o770);
        let error = check(&key.with_file_name("absent")).unwrap_err();
        assert!(
            matches!(
                error,
                ModesError::Writable {
                    who: "its group",
                    ..
                }
            ),
            "{error}"
        );
        // A sticky directory others may write (as /tmp) is fine.
        chmod(&keys, 0o1777);
        check(&key).expect("sticky directory");
        assert!(!error.to_string().contains('\n'));
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused_unless_root_owns_it() {
        // /etc/passwd is root's: accepted.
        check(Path::new("/etc/passwd")).expect("root's file");
        let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
            return;
        };
        if !nix::unistd::geteuid().is_root() {
            return; // only root can give a file away
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("authorized_keys");
        std::fs::write(&file, "").expect("write");
        nix::unistd::chown(&file, Some(nobody.uid), None).expect("chown");
        let error = check(&file).unwrap_err();
        assert!(
            matches!(&error, ModesError::Owner { owner, .. } if *owner == nobody.uid.as_raw()),
            "{error}"
        );
    }

    #[test]
    fn a_config_with_password_hashes_that_others_may_read_is_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.toml");
        let text = "[[users]]\nname = \"alice\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$MizeqC+fHAM2EeiIWF5KBQ$lytTfdQc2+gr95kMW1bEW2z02w/Mi0w24qnJX7dNQlw\"\n";
        std::fs::write(&path, text).expect("write");
        let config = Config::parse(text, &path, dir.path()).expect("valid");
        chmod(&path, 0o644);
        let warning = check_config(&path, &config)
            .expect("not writable")
            .expect("a warning");
        assert!(
            warning.contains("holds password hashes and is readable by others (mode 0644)"),
            "{warning}"
        );
        chmod(&path, 0o600);
        assert_eq!(check_config(&path, &config).expect("private"), None);
        chmod(&path, 0o620);
        assert!(check_config(&path, &config).is_err());
    }
}
