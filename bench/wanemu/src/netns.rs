//! Network namespaces: creation and removal with `ip netns`, a guard that removes what it
//! created when dropped, and opening a TUN device *inside* a namespace (a short-lived thread
//! `setns(2)`s into it), so the devices never exist in the initial namespace and two runs with
//! different namespace names can never collide.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;

use crate::tun::Tun;

/// Where `ip netns add` bind-mounts named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Errors from setting up or tearing down the namespaces.
#[derive(Debug)]
pub struct NsError(pub String);

impl std::fmt::Display for NsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NsError {}

fn err(msg: impl Into<String>) -> NsError {
    NsError(msg.into())
}

/// Namespace names: what `ip netns` accepts and what is safe in a path.
pub fn validate_name(name: &str) -> Result<(), NsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "bad namespace name {name:?}: use 1 to 64 of [A-Za-z0-9._-]"
        )))
    }
}

/// The bind mount of namespace `name`.
pub fn ns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// True if a named namespace `name` exists.
pub fn exists(name: &str) -> bool {
    ns_path(name).exists()
}

/// Runs `ip ARGS`, turning a failure into an error that shows the command and its stderr.
pub fn ip(args: &[&str]) -> Result<(), NsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| err(format!("cannot run `ip` (install iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Deletes namespace `name` if it exists. Devices inside it go with it.
pub fn delete(name: &str) -> Result<bool, NsError> {
    if !exists(name) {
        return Ok(false);
    }
    ip(&["netns", "del", name])?;
    Ok(true)
}

/// Deletes, on drop, the namespaces it was told it created, and only those.
#[derive(Debug, Default)]
pub struct NsGuard {
    created: Vec<String>,
}

impl NsGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates namespace `name` (which must not exist yet) and takes charge of removing it.
    pub fn create(&mut self, name: &str) -> Result<(), NsError> {
        validate_name(name)?;
        if exists(name) {
            return Err(err(format!(
                "network namespace {name:?} already exists (a leftover of an earlier run?); \
                 remove it with `wanemu cleanup --ns-a {name}` or pick other names with --ns-a/--ns-b"
            )));
        }
        ip(&["netns", "add", name])?;
        self.created.push(name.to_owned());
        Ok(())
    }

    /// Removes the namespaces now; reports failures on stderr (there is nobody else to tell).
    pub fn remove_all(&mut self) {
        while let Some(name) = self.created.pop() {
            if let Err(e) = delete(&name) {
                eprintln!("wanemu: cleanup of namespace {name:?} failed: {e}; run `wanemu cleanup --ns-a {name}`");
            }
        }
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Runs `f` on a new thread that has joined network namespace `name`, and returns its result.
/// Only that thread changes namespace; the caller's stays as it was.
pub fn in_namespace<T, F>(name: &str, f: F) -> Result<T, NsError>
where
    T: Send,
    F: FnOnce() -> io::Result<T> + Send,
{
    let path = ns_path(name);
    let ns = File::open(&path).map_err(|e| err(format!("open {}: {e}", path.display())))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: `ns` is an open namespace file; CLONE_NEWNET only moves this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(err(format!(
                    "setns into {name:?}: {}",
                    io::Error::last_os_error()
                )));
            }
            f().map_err(|e| err(format!("in namespace {name:?}: {e}")))
        })
        .join()
        .map_err(|_| err(format!("thread in namespace {name:?} panicked")))?
    })
}

/// Creates TUN device `dev` inside namespace `ns`. IPv6 is switched off in that namespace first,
/// so the kernel sends no router solicitations or DAD probes through the emulated path.
pub fn open_tun_in(ns: &str, dev: &str, offload: bool) -> Result<Tun, NsError> {
    in_namespace(ns, || {
        // /proc/sys/net is per namespace and resolved for the calling thread. Failure only
        // means there is no IPv6 in this kernel, which is fine.
        for key in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6"), "1");
        }
        Tun::open(dev, offload)
    })
}

/// The `tx_dropped` counter of device `dev` in namespace `ns`: packets the kernel could not queue
/// to the TUN reader. `None` if it cannot be read. (`ip netns exec` mounts that namespace's
/// sysfs; the device count is for what the device transmits, i.e. towards the relay.)
pub fn tun_tx_dropped(ns: &str, dev: &str) -> Option<u64> {
    let path = format!("/sys/class/net/{dev}/statistics/tx_dropped");
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", &path])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["sswanA", "a", "x-1_2.3"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ä", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
