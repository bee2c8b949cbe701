//! Keeps the daemon's memory, which holds the identity key, the network
//! secret and every session key, out of core dumps and away from other
//! processes of the same user.
//!
//! Two switches, both set before the config (and so the key files) is read:
//! - `RLIMIT_CORE` 0, soft and hard: no core file, and the limit cannot be
//!   raised again without `CAP_SYS_RESOURCE`;
//! - `PR_SET_DUMPABLE` 0: no core dump whatever the limit or a
//!   `core_pattern` pipe (systemd-coredump) says, and no `ptrace` attach or
//!   `/proc/PID/mem` read by the same uid.
//!
//! Only syscalls, no allocation: safe to call between `fork` and `_exit`,
//! which is how the test checks it.

use std::io;

/// Turn core dumps off for this process (see the module doc).
pub fn forbid_core_dumps() -> io::Result<()> {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass; prctl(PR_SET_DUMPABLE)
    // takes plain integers.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &none) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the child reports through its exit status.
    const OK: i32 = 0;
    const CALL_FAILED: i32 = 10;
    const STILL_DUMPABLE: i32 = 11;
    const CORE_LIMIT_LEFT: i32 = 12;
    const WAS_NOT_DUMPABLE: i32 = 13;

    /// In a forked child, so the test process itself stays dumpable: the
    /// switches are off before the call and on after it.
    #[test]
    fn core_dumps_are_off_after_the_call() {
        // SAFETY: the child runs only syscalls (prctl, getrlimit,
        // setrlimit) and `_exit`, which are safe after fork in a
        // multi-threaded process; the parent waits for it.
        let status = unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
            if pid == 0 {
                let code = if libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 1 {
                    WAS_NOT_DUMPABLE
                } else if forbid_core_dumps().is_err() {
                    CALL_FAILED
                } else if libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 {
                    STILL_DUMPABLE
                } else {
                    let mut lim = libc::rlimit {
                        rlim_cur: 1,
                        rlim_max: 1,
                    };
                    if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) != 0
                        || lim.rlim_cur != 0
                        || lim.rlim_max != 0
                    {
                        CORE_LIMIT_LEFT
                    } else {
                        OK
                    }
                };
                libc::_exit(code);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        };
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), OK, "see the codes above");
    }
}
