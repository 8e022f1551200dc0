//! TUN devices: open `/dev/net/tun` with `TUNSETIFF` (`IFF_TUN | IFF_NO_PI`), non-blocking, and
//! plain `read(2)`/`write(2)` of whole IP packets.
//!
//! With `offload`, the device also gets `IFF_VNET_HDR` and `TUNSETOFFLOAD(TUN_F_CSUM |
//! TUN_F_TSO4 | TUN_F_USO4 | TUN_F_USO6)` (without USO on kernels before 6.2): every read and write starts
//! with a `virtio_net_hdr`, and TCP/IPv4 (and `UDP_SEGMENT` UDP/IPv4) arrives as super-packets
//! of up to 64 KiB (see [`crate::gso`]).
//!
//! A TUN device made this way is not persistent: it disappears when its file descriptor closes,
//! so the process cannot leave a device behind, whatever way it exits.

use std::ffi::CString;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `_IOW('T', 202, int)`: the ioctl that attaches a file descriptor to a TUN/TAP interface.
const TUNSETIFF: libc::c_ulong = 0x4004_54CA;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 208, unsigned int)`: which offloads the device may hand to userspace.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54D0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// `struct ifreq` as far as TUNSETIFF reads it: a 16-byte name and the flags, padded to the
/// kernel's 40 bytes.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TUN device (in whatever network namespace the opening thread was in).
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
}

impl Tun {
    /// Creates TUN device `name` in the calling thread's network namespace, non-blocking.
    pub fn open(name: &str, offload: bool) -> io::Result<Self> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?} (1 to 15 bytes)"),
            ));
        }
        let path = CString::new("/dev/net/tun").map_err(io::Error::other)?;
        // SAFETY: `path` is a valid NUL-terminated string; flags are plain constants.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly opened descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI | if offload { IFF_VNET_HDR } else { 0 },
            _pad: [0; 22],
        };
        for (dst, &src) in req.name.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads (and writes back the name into) a `struct ifreq`, which
        // `IfReq` lays out with the kernel's size; the pointer is valid for the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if offload {
            // UDP segmentation offload (kernel 6.2+) first, then TCP only. The kernel enables
            // USO only when both USO4 and USO6 are asked for (IPv6 is off in our namespaces).
            let with_uso = set_offload(&fd, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_USO4 | TUN_F_USO6);
            if with_uso.is_err() {
                set_offload(&fd, TUN_F_CSUM | TUN_F_TSO4)?;
            }
        }
        Ok(Self {
            fd,
            name: name.to_owned(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw descriptor, for `ppoll` and the relay threads (which never outlive `self`).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn set_offload(fd: &OwnedFd, features: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes the feature bits as the integer argument itself.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            TUNSETOFFLOAD as _,
            libc::c_ulong::from(features),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `read(2)` of one packet from a raw TUN descriptor.
pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `writev(2)` of one packet, gathered from `bufs`, to a raw TUN descriptor.
pub fn write_fd(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // IoSlice is guaranteed ABI-compatible with `struct iovec` on Unix.
    let cnt = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: every slice is valid for reads for the duration of the call.
    let n = unsafe { libc::writev(fd, bufs.as_ptr().cast(), cnt) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
