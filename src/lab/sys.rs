//! Running the system tools the lab drives (`ip`, `nft`, `ping`, `tcpdump`,
//! `iperf3`), with errors that say what to install or check.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{LabError, Result};

/// The Debian package that provides each tool the lab runs.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    ("tcpdump", "tcpdump"),
    ("iperf3", "iperf3"),
    ("sysctl", "procps"),
];

pub(crate) fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

/// Checks that `tool` is on PATH (or in /usr/sbin, /sbin, which a root
/// shell may lack on PATH).
pub(crate) fn require_tool(tool: &'static str) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(Into::into))
        .any(|dir| Path::new(&dir).join(tool).is_file());
    if found {
        Ok(())
    } else {
        let package = PACKAGES
            .iter()
            .find(|(t, _)| *t == tool)
            .map_or("it", |(_, p)| *p);
        Err(LabError::MissingTool { tool, package })
    }
}

/// `ip -n <netns>` (or plain `ip` for the root namespace when `netns` is empty).
pub(crate) fn ip(netns: &str) -> Command {
    let mut cmd = Command::new("ip");
    if !netns.is_empty() {
        cmd.args(["-n", netns]);
    }
    cmd
}

/// `ip netns exec <netns> <program>`.
pub(crate) fn netns_exec(netns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).arg(program);
    cmd
}

/// The command line, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion; its stdout on success, an error with its
/// stderr on a non-zero exit.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            cmd: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Starts `cmd` in the background with stdin closed and stdout/stderr
/// appended to `log`, after a `--- kith-lab: {marker} ---` line that
/// separates one start from the next in the same log.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path, marker: &str) -> Result<Child> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LabError::io(format!("opening {}", log.display()), e))?;
    let _ = writeln!(file, "--- kith-lab: {marker} ---");
    let stdout = file
        .try_clone()
        .map_err(|e| LabError::io("duplicating the log fd", e))?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(file);
    cmd.spawn()
        .map_err(|e| LabError::io(format!("starting `{}`", describe(cmd)), e))
}

/// Runs `cmd` to completion whatever its exit status.
pub(crate) fn output(cmd: &mut Command) -> Result<std::process::Output> {
    cmd.output()
        .map_err(|e| LabError::io(format!("running `{}`", describe(cmd)), e))
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
}

/// SIGTERM to `child`, then SIGKILL if it has not exited after `grace`;
/// reaped either way.
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether a process with this pid exists.
pub(crate) fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// User + system CPU seconds a process has used so far (`utime` +
/// `stime` of `/proc/<pid>/stat`); `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}
