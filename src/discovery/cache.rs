//! The on-disk memory of discovery, under the state directory:
//! - `peers.json`: each peer's last candidates that led to a session, so a
//!   restart while the DHT is unreachable still finds its peers;
//! - `dht-seq`: the last BEP 44 sequence number we published, so `seq`
//!   stays monotonic across restarts;
//! - `lock`: held (flock) by the daemon that owns the directory, so two
//!   networks pointed at one directory fail at start instead of
//!   overwriting each other's cache and sequence.
//!
//! Writes go to a temporary file and are renamed into place: a crash never
//! leaves a half-written cache.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedPeer {
    pub candidates: Vec<SocketAddr>,
    /// Unix seconds when they last worked.
    pub updated: u64,
}

/// Candidates by peer public key (base64), as stored.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerCache {
    pub peers: BTreeMap<String, CachedPeer>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "cannot write {path}: {source}. Check that [discovery] state_dir exists and is writable"
    )]
    Write { path: PathBuf, source: io::Error },
    #[error("ignoring unreadable cache {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let err = |source| CacheError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    // 0600 from the start: the cache says where each peer lives and when.
    // A leftover temporary file from an older version may be more open.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)
}

impl PeerCache {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("peers.json")
    }

    /// A missing file is an empty cache; a corrupt one is reported and
    /// treated as empty (it will be rewritten on the next success).
    pub fn load(state_dir: &Path) -> Result<Self, CacheError> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
                path,
                detail: e.to_string(),
            }),
            Err(_) => Ok(Self::default()),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomically(&Self::path(state_dir), &bytes)
    }

    pub fn get(&self, peer: &PublicKey) -> Option<&CachedPeer> {
        self.peers.get(&peer.to_string())
    }

    /// Drop a peer's entry (it left the config); true if there was one.
    pub fn forget(&mut self, peer: &PublicKey) -> bool {
        self.peers.remove(&peer.to_string()).is_some()
    }

    /// Remember what worked; returns true if anything changed.
    pub fn remember(
        &mut self,
        peer: &PublicKey,
        candidates: Vec<SocketAddr>,
        now_unix: u64,
    ) -> bool {
        let entry = CachedPeer {
            candidates,
            updated: now_unix,
        };
        let key = peer.to_string();
        if self
            .peers
            .get(&key)
            .is_some_and(|old| old.candidates == entry.candidates)
        {
            return false;
        }
        self.peers.insert(key, entry);
        true
    }
}

/// The last published sequence number, if any.
pub fn load_seq(state_dir: &Path) -> Option<i64> {
    std::fs::read_to_string(state_dir.join("dht-seq"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn save_seq(state_dir: &Path, seq: i64) -> Result<(), CacheError> {
    write_atomically(&state_dir.join("dht-seq"), seq.to_string().as_bytes())
}

/// The state directory's owner: the lock is held while this lives (the
/// kernel drops it when the process dies, so a crash leaves nothing stale).
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "state directory {dir} is in use by another kith daemon (another network?). Give each \
         network its own: `kith up --state-dir /var/lib/kith/NETWORK` (kith@NETWORK.service \
         does this) or [discovery] state_dir in one of the files"
    )]
    InUse { dir: PathBuf },
    #[error("cannot lock state directory {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
}

/// Create `state_dir` if needed (0700) and take its lock without waiting.
pub fn lock_state_dir(state_dir: &Path) -> Result<StateLock, LockError> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::DirBuilderExt as _;
    let io = |source| LockError::Io {
        dir: state_dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(state_dir.join("lock"))
        .map_err(io)?;
    // SAFETY: flock on a descriptor we own; it changes no memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            LockError::InUse {
                dir: state_dir.to_path_buf(),
            }
        } else {
            io(e)
        });
    }
    Ok(StateLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    #[test]
    fn a_second_owner_of_a_state_dir_is_refused_until_the_first_is_gone() {
        let dir = std::env::temp_dir().join(format!("kith-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = lock_state_dir(&dir).expect("first lock");
        // flock is per open file description: a second open conflicts even
        // in the same process, as a second daemon would.
        let second = lock_state_dir(&dir).unwrap_err();
        assert!(matches!(second, LockError::InUse { .. }), "{second}");
        assert!(second.to_string().contains("--state-dir"), "{second}");
        drop(first);
        lock_state_dir(&dir).expect("free again once the first owner is gone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("kith-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(PeerCache::load(&dir).unwrap(), PeerCache::default());
        let peer = SecretKey::from_seed([3; 32]).public();
        let mut c = PeerCache::default();
        let addrs = vec!["198.18.0.2:51871".parse().unwrap()];
        assert!(c.remember(&peer, addrs.clone(), 100));
        assert!(
            !c.remember(&peer, addrs.clone(), 200),
            "unchanged candidates are not a change"
        );
        // A stale, world-readable temporary file does not make it public.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(PeerCache::path(&dir).with_extension("tmp"), b"old").unwrap();
        c.save(&dir).unwrap();
        let back = PeerCache::load(&dir).unwrap();
        assert_eq!(back.get(&peer).unwrap().candidates, addrs);
        let mode = |p: PathBuf| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(PeerCache::path(&dir)), 0o600);

        std::fs::write(PeerCache::path(&dir), b"{not json").unwrap();
        assert!(matches!(
            PeerCache::load(&dir),
            Err(CacheError::Corrupt { .. })
        ));

        assert_eq!(load_seq(&dir), None);
        save_seq(&dir, 42).unwrap();
        assert_eq!(load_seq(&dir), Some(42));
        assert_eq!(mode(dir.join("dht-seq")), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
