//! SIGINT, SIGTERM and SIGHUP set a process-wide stop flag instead of killing the process, so
//! that the relay threads stop and the namespaces are removed on the normal return path.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the signal handler; polled by the main thread and the relay threads.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler only does an atomic
        // store. No SA_RESTART, so blocking calls return EINTR and the flag is seen promptly.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// True once a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Requests a stop (used by `--duration-s` and when a relay thread fails).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
