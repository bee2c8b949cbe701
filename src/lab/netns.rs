//! Network namespaces: create, delete, enter from a thread, and sweep what
//! labs of dead processes left behind.
//!
//! Each live lab claims its prefix with a file `/run/kith-lab/<prefix>.pid`
//! holding its process id, written before any namespace exists. The sweep
//! deletes namespaces named like a lab's (`k` + 5 hex digits + `-`) whose
//! claim is missing or whose process is gone, and the scratch directory of
//! a lab whose claim outlived its process (killed: it never cleaned up; a
//! lab that ended released its claim, and may keep its files on purpose).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::{LabError, Result, sys};

const CLAIMS: &str = "/run/kith-lab";

fn claim_path(prefix: &str) -> PathBuf {
    PathBuf::from(CLAIMS).join(format!("{prefix}.pid"))
}

/// A lab's scratch directory: configs, keys, logs, captures.
pub(crate) fn scratch_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kith-lab-{prefix}"))
}

pub(crate) fn claim_prefix(prefix: &str) -> Result<()> {
    std::fs::create_dir_all(CLAIMS).map_err(|e| LabError::io(format!("creating {CLAIMS}"), e))?;
    let path = claim_path(prefix);
    // Written aside and renamed into place: another lab's sweep (a thread
    // of this test binary, or another process) must never read the claim
    // half-written, take it for a dead lab's and reap this lab's files.
    let tmp = path.with_extension("pid.new");
    std::fs::write(&tmp, std::process::id().to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| LabError::io(format!("writing {}", path.display()), e))
}

pub(crate) fn release_prefix(prefix: &str) {
    let _ = std::fs::remove_file(claim_path(prefix));
}

pub(crate) fn create(netns: &str) -> Result<()> {
    sys::run(sys::ip("").args(["netns", "add", netns]))?;
    sys::run(sys::ip(netns).args(["link", "set", "lo", "up"]))?;
    Ok(())
}

/// Kills every process left in `netns`, then deletes it.
pub(crate) fn destroy(netns: &str) {
    if let Ok(pids) = sys::run(sys::ip("").args(["netns", "pids", netns])) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
            sys::signal(pid, libc::SIGKILL);
        }
    }
    let _ = sys::run(sys::ip("").args(["netns", "del", netns]));
    // Files a test put there for `ip netns exec` (resolv.conf, hosts).
    let _ = std::fs::remove_dir_all(etc_dir(netns));
}

/// `/etc/netns/<netns>`: `ip netns exec` bind-mounts each file in it over
/// the one of the same name in `/etc`, for the command it runs.
pub(crate) fn etc_dir(netns: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(netns)
}

/// Moves the calling thread into `netns`: sockets it creates afterwards
/// live there. Use on a thread of its own (see `Host::run_in`).
pub(crate) fn enter(netns: &str) -> Result<()> {
    let path = format!("/run/netns/{netns}");
    let file = File::open(&path).map_err(|e| LabError::io(format!("opening {path}"), e))?;
    // SAFETY: setns on a valid namespace fd only changes this thread's
    // network namespace; the fd stays open for the duration of the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(LabError::io(
            format!("entering network namespace {netns} (setns)"),
            std::io::Error::last_os_error(),
        ))
    }
}

/// A fresh random lab prefix: `k` + 5 hex digits.
pub(crate) fn random_prefix() -> Result<String> {
    let mut bytes = [0u8; 3];
    getrandom::fill(&mut bytes)
        .map_err(|e| LabError::io("reading random bytes for the lab prefix", e.into()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("k{}", &hex[..5]))
}

/// Whether `prefix` is a lab's: `k` + 5 hex digits.
fn is_lab_prefix(prefix: &str) -> bool {
    prefix
        .strip_prefix('k')
        .is_some_and(|hex| hex.len() == 5 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `name` looks like a lab namespace: a lab prefix + `-` + a name.
pub(crate) fn lab_prefix_of(name: &str) -> Option<&str> {
    let (prefix, rest) = name.split_once('-')?;
    (is_lab_prefix(prefix) && !rest.is_empty()).then_some(prefix)
}

fn claim_is_live(prefix: &str) -> bool {
    std::fs::read_to_string(claim_path(prefix))
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
        .is_some_and(sys::alive)
}

/// Forgets a dead lab: its scratch directory if its claim outlived it,
/// then the claim.
fn reap(prefix: &str) {
    if claim_path(prefix).exists() {
        let _ = std::fs::remove_dir_all(scratch_dir(prefix));
    }
    release_prefix(prefix);
}

/// Deletes lab namespaces whose owning process is gone, and what else a
/// killed lab left (see the module docs).
pub(crate) fn sweep_stale() {
    if let Ok(list) = sys::run(sys::ip("").args(["netns", "list"])) {
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if let Some(prefix) = lab_prefix_of(name)
                && !claim_is_live(prefix)
            {
                destroy(name);
                reap(prefix);
            }
        }
    }
    // Claims of killed labs whose namespaces are gone already.
    let Ok(claims) = std::fs::read_dir(CLAIMS) else {
        return;
    };
    for entry in claims.flatten() {
        let name = entry.file_name();
        // A claim a killed lab was still writing (see `claim_prefix`).
        // Judged by age, not by its contents: one being written now may
        // read empty, and must not be taken away before its rename.
        if let Some(prefix) = name.to_str().and_then(|n| n.strip_suffix(".pid.new"))
            && is_lab_prefix(prefix)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60))
        {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        let Some(prefix) = name.to_str().and_then(|n| n.strip_suffix(".pid")) else {
            continue;
        };
        if is_lab_prefix(prefix) && !claim_is_live(prefix) {
            reap(prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lab killed before it cleaned up leaves its claim and scratch
    /// directory; the next sweep removes both, and leaves a live lab's.
    #[test]
    fn the_sweep_reaps_what_a_killed_lab_left() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: writing lab claims under {CLAIMS} needs root");
            return;
        }
        // A process that has exited: its pid names no live lab.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let dead = child.id();
        let killed = random_prefix().unwrap();
        std::fs::create_dir_all(CLAIMS).unwrap();
        std::fs::write(claim_path(&killed), dead.to_string()).unwrap();
        std::fs::create_dir_all(scratch_dir(&killed).join("sub")).unwrap();
        std::fs::write(scratch_dir(&killed).join("sub/a.log"), "x").unwrap();
        // A live lab (this process) with a claim and a directory.
        let live = if killed.ends_with('0') {
            format!("{}1", &killed[..5])
        } else {
            format!("{}0", &killed[..5])
        };
        claim_prefix(&live).unwrap();
        std::fs::create_dir_all(scratch_dir(&live)).unwrap();

        // A claim the killed lab was still writing, long ago, and one being
        // written now.
        let (old_tmp, new_tmp) = (
            claim_path(&killed).with_extension("pid.new"),
            claim_path(&live).with_extension("pid.new"),
        );
        std::fs::write(&old_tmp, "").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old_tmp)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(300))
            .unwrap();
        std::fs::write(&new_tmp, "").unwrap();

        sweep_stale();
        let reaped = !scratch_dir(&killed).exists() && !claim_path(&killed).exists();
        let kept = scratch_dir(&live).exists() && claim_path(&live).exists();
        let tmp_swept = !old_tmp.exists() && new_tmp.exists();
        let _ = std::fs::remove_file(&old_tmp);
        let _ = std::fs::remove_file(&new_tmp);
        let _ = std::fs::remove_dir_all(scratch_dir(&killed));
        let _ = std::fs::remove_dir_all(scratch_dir(&live));
        release_prefix(&killed);
        release_prefix(&live);
        assert!(reaped, "the killed lab's claim and directory are gone");
        assert!(kept, "a live lab's claim and directory stay");
        assert!(
            tmp_swept,
            "an old half-written claim goes, one being written stays"
        );
    }

    /// Labs start on many test threads at once, each sweeping while
    /// another writes its claim: a sweep must always read a live claim as
    /// live.
    #[test]
    fn a_claim_being_written_always_reads_as_live() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: writing lab claims under {CLAIMS} needs root");
            return;
        }
        let prefix = random_prefix().unwrap();
        claim_prefix(&prefix).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let dead_reads = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut dead = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    dead += usize::from(!claim_is_live(&prefix));
                }
                dead
            });
            for _ in 0..5_000 {
                claim_prefix(&prefix).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap()
        });
        release_prefix(&prefix);
        assert_eq!(dead_reads, 0, "a live claim read as dead while rewritten");
    }

    #[test]
    fn recognises_lab_namespaces() {
        assert_eq!(lab_prefix_of("k1a2b3-a"), Some("k1a2b3"));
        assert_eq!(lab_prefix_of("kabcde-router1"), Some("kabcde"));
        assert_eq!(lab_prefix_of("k1a2b3-"), None);
        assert_eq!(lab_prefix_of("k1a2b-a"), None);
        assert_eq!(lab_prefix_of("kxyzab-a"), None);
        assert_eq!(lab_prefix_of("docker-a"), None);
        assert_eq!(lab_prefix_of("k1a2b3"), None);
    }
}
