//! The SSH algorithms keepsh offers, in sshd_config(5)'s terms:
//! `kex_algorithms`, `host_key_algorithms`, `ciphers` and `macs` are
//! sshd's `KexAlgorithms`, `HostKeyAlgorithms`, `Ciphers` and `MACs`, with
//! the same list forms (a whole list, or `+` to append to the defaults,
//! `-` to remove, `^` to put first; `*` and `?` wildcards) resolved the way
//! OpenSSH's `kex_assemble_names` does. Only names that russh implements
//! and that keepsh can serve are accepted.

use std::fmt;

use wildmatch::WildMatch;

/// One of the four lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Key exchange methods (sshd_config(5) `KexAlgorithms`).
    Kex,
    /// Host key signature algorithms (`HostKeyAlgorithms`).
    HostKey,
    /// Ciphers (`Ciphers`).
    Cipher,
    /// Message authentication codes (`MACs`).
    Mac,
}

impl Kind {
    /// Every kind, in KEXINIT's order.
    pub const ALL: [Kind; 4] = [Kind::Kex, Kind::HostKey, Kind::Cipher, Kind::Mac];

    /// The `[server]` key in `server.toml`.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Kex => "kex_algorithms",
            Kind::HostKey => "host_key_algorithms",
            Kind::Cipher => "ciphers",
            Kind::Mac => "macs",
        }
    }

    /// What sshd calls one of these in its "no matching ... found" line.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Kex => "key exchange method",
            Kind::HostKey => "host key type",
            Kind::Cipher => "cipher",
            Kind::Mac => "MAC",
        }
    }

    /// Every name keepsh accepts for this list, strongest first.
    pub fn supported(self) -> &'static [&'static str] {
        match self {
            Kind::Kex => &[
                "mlkem768x25519-sha256",
                "curve25519-sha256",
                "curve25519-sha256@libssh.org",
                "ecdh-sha2-nistp256",
                "ecdh-sha2-nistp384",
                "ecdh-sha2-nistp521",
                "diffie-hellman-group18-sha512",
                "diffie-hellman-group16-sha512",
                "diffie-hellman-group14-sha256",
                "diffie-hellman-group14-sha1",
            ],
            Kind::HostKey => &[
                "ssh-ed25519",
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521",
                "rsa-sha2-512",
                "rsa-sha2-256",
                "ssh-rsa",
            ],
            Kind::Cipher => &[
                "chacha20-poly1305@openssh.com",
                "aes128-ctr",
                "aes192-ctr",
                "aes256-ctr",
                "aes128-gcm@openssh.com",
                "aes256-gcm@openssh.com",
                "aes128-cbc",
                "aes192-cbc",
                "aes256-cbc",
            ],
            Kind::Mac => &[
                "hmac-sha2-256-etm@openssh.com",
                "hmac-sha2-512-etm@openssh.com",
                "hmac-sha1-etm@openssh.com",
                "hmac-sha2-256",
                "hmac-sha2-512",
                "hmac-sha1",
            ],
        }
    }

    /// The defaults: OpenSSH 9.x's, less what russh lacks (sntrup761,
    /// umac) and what ssh-audit fails (NIST curves, SHA-1, CBC, DH
    /// groups under 3072 bits). Host key types are offered only for the
    /// host keys that exist.
    pub fn defaults(self) -> &'static [&'static str] {
        match self {
            Kind::Kex => &[
                "mlkem768x25519-sha256",
                "curve25519-sha256",
                "curve25519-sha256@libssh.org",
            ],
            Kind::HostKey => &[
                "ssh-ed25519",
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521",
                "rsa-sha2-512",
                "rsa-sha2-256",
            ],
            Kind::Cipher => &[
                "chacha20-poly1305@openssh.com",
                "aes128-ctr",
                "aes192-ctr",
                "aes256-ctr",
                "aes128-gcm@openssh.com",
                "aes256-gcm@openssh.com",
            ],
            Kind::Mac => &[
                "hmac-sha2-256-etm@openssh.com",
                "hmac-sha2-512-etm@openssh.com",
                "hmac-sha2-256",
                "hmac-sha2-512",
            ],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Why a list was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmError {
    /// A name keepsh does not implement (or a pattern that matches none).
    #[error("unsupported {noun} \"{name}\"", noun = kind.noun())]
    Unsupported {
        /// The list.
        kind: Kind,
        /// The name as written.
        name: String,
    },
    /// The list resolves to nothing: no client could connect.
    #[error("{kind} leaves no {noun} to offer", noun = kind.noun())]
    Empty {
        /// The list.
        kind: Kind,
    },
}

/// Resolves `spec` against `kind`'s defaults, as sshd does: `"a,b"`
/// replaces them, `"+a,b"` appends, `"-a,b"` removes, `"^a,b"` puts first.
/// Names may use `*` and `?` wildcards; each must match a supported name
/// (a `-` pattern may match nothing). The result keeps no duplicates.
///
/// # Errors
/// [`AlgorithmError::Unsupported`] for a name keepsh does not implement,
/// [`AlgorithmError::Empty`] if nothing is left.
pub fn resolve(kind: Kind, spec: &str) -> Result<Vec<&'static str>, AlgorithmError> {
    let (form, list) = match spec.chars().next() {
        Some(c @ ('+' | '-' | '^')) => (Some(c), &spec[1..]),
        _ => (None, spec),
    };
    let patterns: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let matching = |pattern: &str| -> Vec<&'static str> {
        let wild = WildMatch::new(pattern);
        kind.supported()
            .iter()
            .copied()
            .filter(|name| wild.matches(name))
            .collect()
    };
    let named = || -> Result<Vec<&'static str>, AlgorithmError> {
        let mut names = Vec::new();
        for pattern in &patterns {
            let found = matching(pattern);
            if found.is_empty() {
                return Err(AlgorithmError::Unsupported {
                    kind,
                    name: (*pattern).to_owned(),
                });
            }
            names.extend(found);
        }
        Ok(names)
    };
    let defaults = kind.defaults().iter().copied();
    let mut resolved: Vec<&'static str> = match form {
        None => named()?,
        Some('+') => defaults.chain(named()?).collect(),
        Some('^') => named()?.into_iter().chain(defaults).collect(),
        _ => {
            let removed: Vec<WildMatch> = patterns.iter().map(|p| WildMatch::new(p)).collect();
            defaults
                .filter(|name| !removed.iter().any(|r| r.matches(name)))
                .collect()
        }
    };
    let mut seen = std::collections::HashSet::new();
    resolved.retain(|name| seen.insert(*name));
    if resolved.is_empty() {
        return Err(AlgorithmError::Empty { kind });
    }
    Ok(resolved)
}

/// The four resolved lists, in preference order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Algorithms {
    /// `kex_algorithms`.
    pub kex: Vec<&'static str>,
    /// `host_key_algorithms`.
    pub host_key: Vec<&'static str>,
    /// `ciphers`.
    pub cipher: Vec<&'static str>,
    /// `macs`.
    pub mac: Vec<&'static str>,
}

impl Default for Algorithms {
    fn default() -> Self {
        Algorithms {
            kex: Kind::Kex.defaults().to_vec(),
            host_key: Kind::HostKey.defaults().to_vec(),
            cipher: Kind::Cipher.defaults().to_vec(),
            mac: Kind::Mac.defaults().to_vec(),
        }
    }
}

impl Algorithms {
    /// The list of `kind`.
    pub fn get(&self, kind: Kind) -> &[&'static str] {
        match kind {
            Kind::Kex => &self.kex,
            Kind::HostKey => &self.host_key,
            Kind::Cipher => &self.cipher,
            Kind::Mac => &self.mac,
        }
    }

    /// Sets the list of `kind`.
    pub fn set(&mut self, kind: Kind, names: Vec<&'static str>) {
        match kind {
            Kind::Kex => self.kex = names,
            Kind::HostKey => self.host_key = names,
            Kind::Cipher => self.cipher = names,
            Kind::Mac => self.mac = names,
        }
    }

    /// russh's form. Every name was checked against [`Kind::supported`],
    /// which lists only names russh implements (a unit test holds them
    /// together). The extension markers `ext-info-s` (RFC 8308) and
    /// `kex-strict-s-v00@openssh.com` (strict KEX, which defeats the
    /// Terrapin attack) are always appended.
    pub fn preferred(&self) -> russh::Preferred {
        use russh::{cipher, compression, kex, mac};
        use std::borrow::Cow;
        let mut kexes: Vec<kex::Name> = self
            .kex
            .iter()
            .filter_map(|n| kex::Name::try_from(*n).ok())
            .collect();
        kexes.extend([
            kex::EXTENSION_SUPPORT_AS_SERVER,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]);
        russh::Preferred {
            kex: Cow::Owned(kexes),
            key: Cow::Owned(
                self.host_key
                    .iter()
                    .filter_map(|n| n.parse::<russh::keys::Algorithm>().ok())
                    .collect(),
            ),
            cipher: Cow::Owned(
                self.cipher
                    .iter()
                    .filter_map(|n| cipher::Name::try_from(*n).ok())
                    .collect(),
            ),
            mac: Cow::Owned(
                self.mac
                    .iter()
                    .filter_map(|n| mac::Name::try_from(*n).ok())
                    .collect(),
            ),
            compression: Cow::Borrowed(&[compression::NONE]),
            ..russh::Preferred::default()
        }
    }
}

/// The `server.toml` line that would let a client in whose offer for
/// `kind` was `theirs` (their preference order): `macs = "+hmac-sha1"`
/// for the first name of theirs that keepsh supports, if any.
pub fn enabling_line(kind: Kind, theirs: &[String]) -> Option<String> {
    let name = theirs
        .iter()
        .find(|t| kind.supported().contains(&t.as_str()))?;
    Some(format!("{} = \"+{name}\"", kind.key()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_resolve_as_sshd_does() {
        let mac = |spec| resolve(Kind::Mac, spec);
        assert_eq!(
            mac("hmac-sha1,hmac-sha2-256"),
            Ok(vec!["hmac-sha1", "hmac-sha2-256"])
        );
        let mut appended = Kind::Mac.defaults().to_vec();
        appended.push("hmac-sha1");
        assert_eq!(mac("+hmac-sha1"), Ok(appended));
        assert_eq!(
            mac("-*-etm@openssh.com"),
            Ok(vec!["hmac-sha2-256", "hmac-sha2-512"])
        );
        let first = mac("^hmac-sha2-512").expect("resolves");
        assert_eq!(first[0], "hmac-sha2-512");
        assert_eq!(first.len(), Kind::Mac.defaults().len());
        assert_eq!(
            resolve(Kind::Cipher, "aes*-ctr"),
            Ok(vec!["aes128-ctr", "aes192-ctr", "aes256-ctr"])
        );
    }

    #[test]
    fn unknown_names_and_empty_results_are_refused() {
        assert_eq!(
            resolve(Kind::Mac, "+hmac-md5"),
            Err(AlgorithmError::Unsupported {
                kind: Kind::Mac,
                name: "hmac-md5".into()
            })
        );
        assert_eq!(
            resolve(Kind::Cipher, "-*"),
            Err(AlgorithmError::Empty { kind: Kind::Cipher })
        );
        assert_eq!(
            resolve(Kind::Kex, ""),
            Err(AlgorithmError::Empty { kind: Kind::Kex })
        );
        // A removal that matches nothing is not an error (as in sshd).
        assert!(resolve(Kind::Kex, "-ecdh-*").is_ok());
    }

    #[test]
    fn every_supported_name_is_one_russh_implements() {
        use russh::{cipher, kex, mac};
        for name in Kind::Kex.supported() {
            assert!(kex::Name::try_from(*name).is_ok(), "{name}");
        }
        for name in Kind::HostKey.supported() {
            assert!(name.parse::<russh::keys::Algorithm>().is_ok(), "{name}");
        }
        for name in Kind::Cipher.supported() {
            assert!(cipher::Name::try_from(*name).is_ok(), "{name}");
        }
        for name in Kind::Mac.supported() {
            assert!(mac::Name::try_from(*name).is_ok(), "{name}");
        }
        for kind in Kind::ALL {
            for name in kind.defaults() {
                assert!(kind.supported().contains(name), "{kind}: {name}");
            }
        }
        let preferred = Algorithms::default().preferred();
        assert_eq!(preferred.cipher.len(), Kind::Cipher.defaults().len());
        assert_eq!(preferred.key.len(), Kind::HostKey.defaults().len());
    }

    #[test]
    fn the_enabling_line_names_their_first_supported_offer() {
        let theirs = ["hmac-md5".to_owned(), "hmac-sha1".to_owned()];
        assert_eq!(
            enabling_line(Kind::Mac, &theirs).as_deref(),
            Some("macs = \"+hmac-sha1\"")
        );
        assert_eq!(enabling_line(Kind::Mac, &theirs[..1]), None);
    }
}
