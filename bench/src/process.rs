//! Child processes the bench starts (nodes, Redis, the floor server), free ports, programs.
//!
//! Every child is held by a [`ChildGuard`], which kills and reaps it when dropped: at the end
//! of the run, on an error (the `?` unwinds the guards), on a panic, and on Ctrl-C or SIGTERM
//! (`main` drops the whole run future, and with it every guard).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// A running child process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    log: Option<PathBuf>,
}

impl ChildGuard {
    /// Starts `command`, naming it `name` in messages; `log` is where its output goes.
    pub fn spawn(name: &str, command: &mut Command, log: Option<PathBuf>) -> Result<ChildGuard> {
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the process has already exited, quoting the end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}){}",
                self.name,
                self.log.as_deref().map(log_tail).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Polls `ready` every 50 ms until it succeeds, the process exits, or `timeout` passes.
    pub async fn wait_ready<F, Fut>(&mut self, timeout: Duration, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let err = match ready().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                bail!(
                    "{} is not ready after {timeout:?}: {err:#}{}",
                    self.name,
                    self.log.as_deref().map(log_tail).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Errors mean the process is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log file, formatted to follow an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
    format!("; end of {}:\n  {tail}", path.display())
}

/// `n` distinct free ports on loopback, found by binding port 0 and releasing the sockets.
/// Addresses must be known before the processes start (DynamoKV's membership is static), so
/// there is a small window in which another program could take one; starting then fails
/// cleanly.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot find free ports on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A program on `PATH` (or in /usr/sbin and /usr/bin, which a non-root `PATH` may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (then `apt-get` needs no `sudo`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Installs Debian packages with `apt-get` (through `sudo -n` unless root), running
/// `apt-get update` first only if the plain install fails. Output goes to the terminal.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let run = |args: &[&str]| -> Result<bool> {
        let mut cmd = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        let status = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?;
        Ok(status.success())
    };
    let mut install = vec!["install", "-y", "-qq"];
    install.extend_from_slice(packages);
    if run(&install)? {
        return Ok(());
    }
    if run(&["update", "-qq"])? && run(&install)? {
        return Ok(());
    }
    bail!("apt-get install {} failed", packages.join(" "))
}
