//! One rtl_433 process: started in a process group of its own (so that whatever it starts dies with
//! it), stdin closed, stdout and stderr piped, and killed as a group by its id. The one place that
//! signals processes.

use std::process::Stdio;

use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// A started rtl_433, its output pipes taken out so that they are read beside `child.wait()`.
pub struct Running {
    pub child: Child,
    /// Its process id, which is also its process group's id.
    pub pid: i32,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Starts `command` with `args` in a new process group.
pub fn start(command: &str, args: &[String]) -> std::io::Result<Running> {
    let mut child = Command::new(command)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let missing = || std::io::Error::other("the child's pipes were not set up");
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let stderr = child.stderr.take().ok_or_else(missing)?;
    Ok(Running {
        child,
        pid,
        stdout,
        stderr,
    })
}

/// Kills the process group `pid` leads (SIGKILL): rtl_433 and anything it started. A group already
/// gone is fine.
pub fn kill_group(pid: i32) {
    if pid > 1 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}
