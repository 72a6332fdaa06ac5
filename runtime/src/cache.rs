//! Compile cache: precompiled components on disk, so a plugin is compiled once per content,
//! engine settings and wasmtime version, not on every start.
//!
//! A deserialized artifact is trusted native code, so the cache guards it:
//! - the folder is created owner-only (0700) and refused if anyone else can write to it or it
//!   belongs to another user;
//! - entries are written owner-only (0600), atomically (temporary file, then rename);
//! - the key is the SHA-256 of the component's bytes plus the engine's compatibility hash and
//!   the wasmtime version, so an entry can only ever stand for the exact component it was
//!   compiled from, by the same engine;
//! - each entry carries the SHA-256 of its own payload; an entry whose hash does not match is
//!   thrown away and recompiled, never deserialized.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of every entry: format name and version.
const MAGIC: &[u8; 8] = b"SWTCACH1";
/// File name ending of entries.
const EXTENSION: &str = "cwasm";

/// The cache folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Creating or reading the folder failed.
    #[error("compile cache {path}: {source}")]
    Io {
        /// The folder or entry.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The folder is not private to this user.
    #[error("compile cache {path}: refused: {reason}")]
    Insecure {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No folder was configured and no default could be found.
    #[error("compile cache: no folder (set SWARMTEL_CACHE_DIR, XDG_CACHE_HOME or HOME)")]
    NoDefault,
}

/// What happened when a component was looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A valid entry was deserialized.
    Hit,
    /// No entry: compiled and stored.
    Compiled,
    /// An entry failed its integrity check or did not deserialize: it was deleted, the
    /// component compiled again and stored afresh.
    Rejected(String),
}

/// One entry, for `swarmtel cache ls`.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    /// The entry's file name (its key).
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A compile cache folder.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// The default folder: `$SWARMTEL_CACHE_DIR`, else `$XDG_CACHE_HOME/swarmtel`, else
    /// `$HOME/.cache/swarmtel`.
    pub fn default_dir(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, CacheError> {
        if let Some(dir) = env("SWARMTEL_CACHE_DIR").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        if let Some(dir) = env("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir).join("swarmtel"));
        }
        env("HOME")
            .filter(|d| !d.is_empty())
            .map(|home| PathBuf::from(home).join(".cache").join("swarmtel"))
            .ok_or(CacheError::NoDefault)
    }

    /// Opens (creating owner-only if needed) a cache folder, refusing one that other users
    /// could write to.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let io = |source| CacheError::Io {
            path: dir.to_owned(),
            source,
        };
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let metadata = fs::symlink_metadata(dir).map_err(io)?;
        let insecure = |reason: String| CacheError::Insecure {
            path: dir.to_owned(),
            reason,
        };
        if !metadata.is_dir() {
            return Err(insecure("not a folder (a symlink or a file)".into()));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if metadata.uid() != me {
            return Err(insecure(format!(
                "owned by uid {}, not by this user (uid {me})",
                metadata.uid()
            )));
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(insecure(format!(
                "permissions {mode:o} let other users in; it must be 700 (chmod 700)"
            )));
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry name for a component's bytes under this engine.
    pub fn key(engine: &Engine, component: &[u8]) -> String {
        let content = Sha256::digest(component);
        let mut settings = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut settings);
        env!("CARGO_PKG_VERSION").hash(&mut settings);
        format!(
            "{}-{:016x}-wasmtime{}.{EXTENSION}",
            hex(&content),
            settings.finish(),
            wasmtime_version()
        )
    }

    /// Whether an entry for `bytes` exists (it is verified only when loaded).
    pub fn has_entry(&self, engine: &Engine, bytes: &[u8]) -> bool {
        self.dir.join(Self::key(engine, bytes)).is_file()
    }

    /// The component compiled from `bytes`: from the cache when a valid entry exists, else
    /// compiled and stored.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.dir.join(Self::key(engine, bytes));
        let mut outcome = CacheOutcome::Compiled;
        if let Ok(entry) = fs::read(&path) {
            match verified_payload(&entry) {
                Ok(payload) => {
                    // SAFETY: the payload is what this process's engine serialized for exactly
                    // these component bytes (the key), its hash matches, and the folder is
                    // private to this user.
                    match unsafe { Component::deserialize(engine, payload) } {
                        Ok(component) => return Ok((component, CacheOutcome::Hit)),
                        Err(error) => {
                            outcome = CacheOutcome::Rejected(format!("does not load: {error}"))
                        }
                    }
                }
                Err(reason) => outcome = CacheOutcome::Rejected(reason),
            }
            let _ = fs::remove_file(&path);
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Ok(serialized) = component.serialize() {
            // A cache that cannot be written only costs time; the component is still good.
            let _ = self.store(&path, &serialized);
        }
        Ok((component, outcome))
    }

    fn store(&self, path: &Path, payload: &[u8]) -> std::io::Result<()> {
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(payload))?;
        file.write_all(payload)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    }

    /// Every entry, by name.
    pub fn entries(&self) -> Result<Vec<CacheEntry>, CacheError> {
        let io = |source| CacheError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut entries = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(io)? {
            let item = item.map_err(io)?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(&format!(".{EXTENSION}")) {
                entries.push(CacheEntry {
                    name,
                    bytes: item.metadata().map_err(io)?.len(),
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Deletes every entry; returns how many.
    pub fn clear(&self) -> Result<usize, CacheError> {
        let entries = self.entries()?;
        for entry in &entries {
            let path = self.dir.join(&entry.name);
            fs::remove_file(&path).map_err(|source| CacheError::Io { path, source })?;
        }
        Ok(entries.len())
    }
}

/// The payload of an entry whose header and hash check out.
fn verified_payload(entry: &[u8]) -> Result<&[u8], String> {
    let header = MAGIC.len() + 32;
    if entry.len() < header || &entry[..MAGIC.len()] != MAGIC {
        return Err("not a swarmtel cache entry".into());
    }
    let (stored, payload) = entry[MAGIC.len()..].split_at(32);
    if Sha256::digest(payload).as_slice() != stored {
        return Err("content hash does not match (tampered or corrupt)".into());
    }
    Ok(payload)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The wasmtime version this runtime is built with (part of every key).
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_payload_checks_magic_and_hash() {
        let payload = b"compiled code";
        let mut entry = MAGIC.to_vec();
        entry.extend_from_slice(&Sha256::digest(payload));
        entry.extend_from_slice(payload);
        assert_eq!(verified_payload(&entry).unwrap(), payload);

        let mut tampered = entry.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(
            verified_payload(&tampered)
                .unwrap_err()
                .contains("tampered")
        );
        assert!(verified_payload(b"SWTCACH1short").is_err());
        assert!(verified_payload(b"other file at all, long enough to have a header ....").is_err());
    }

    #[test]
    fn the_folder_is_created_private_and_a_shared_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/cache");
        let cache = CompileCache::open(&dir).unwrap();
        let mode = fs::metadata(cache.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let error = CompileCache::open(&shared).unwrap_err().to_string();
        assert!(error.contains("777"), "{error}");

        let file = root.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(CompileCache::open(&file).is_err());
    }

    #[test]
    fn keys_differ_by_content_and_name_the_wasmtime_version() {
        let engine = Engine::default();
        let a = CompileCache::key(&engine, b"one");
        let b = CompileCache::key(&engine, b"two");
        assert_ne!(a, b);
        assert!(a.ends_with("-wasmtime48.0.8.cwasm"), "{a}");
        assert_eq!(a, CompileCache::key(&engine, b"one"));
    }

    #[test]
    fn default_dir_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        assert_eq!(
            CompileCache::default_dir(&env(&[("SWARMTEL_CACHE_DIR", "/c"), ("HOME", "/h")]))
                .unwrap(),
            PathBuf::from("/c")
        );
        assert_eq!(
            CompileCache::default_dir(&env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/x/swarmtel")
        );
        assert_eq!(
            CompileCache::default_dir(&env(&[("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.cache/swarmtel")
        );
        assert!(CompileCache::default_dir(&env(&[])).is_err());
    }
}
