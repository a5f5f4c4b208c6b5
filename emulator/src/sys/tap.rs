//! Tap network interfaces for virtio-net (`--net tap=NAME`): /dev/net/tun's TUNSETIFF
//! (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), the vnet header's size and offloads, and the
//! interface's address, netmask, MTU and up flag through an AF_INET socket's ioctls.
//!
//! A tap that did not exist is created by TUNSETIFF without TUNSETPERSIST: the kernel
//! removes it when its last descriptor closes, so it goes away at yakvm's exit whatever
//! the way out (even a crash). A tap that existed (`ip tuntap add ...`, persistent) is
//! attached to and left as it was found.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

const TUN_PATH: &str = "/dev/net/tun";
// linux/if_tun.h: _IOW('T', 202, int), _IOW('T', 208, unsigned int), _IOW('T', 216, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

nix::ioctl_write_ptr_bad!(tun_set_iff, TUNSETIFF, libc::ifreq);
nix::ioctl_write_int_bad!(tun_set_offload, TUNSETOFFLOAD);
nix::ioctl_write_ptr_bad!(tun_set_vnet_hdr_sz, TUNSETVNETHDRSZ, libc::c_int);
nix::ioctl_write_ptr_bad!(sioc_set_if_addr, libc::SIOCSIFADDR, libc::ifreq);
nix::ioctl_write_ptr_bad!(sioc_set_if_netmask, libc::SIOCSIFNETMASK, libc::ifreq);
nix::ioctl_write_ptr_bad!(sioc_set_if_mtu, libc::SIOCSIFMTU, libc::ifreq);
nix::ioctl_write_ptr_bad!(sioc_set_if_flags, libc::SIOCSIFFLAGS, libc::ifreq);
nix::ioctl_readwrite_bad!(sioc_get_if_flags, libc::SIOCGIFFLAGS, libc::ifreq);

/// How to set a tap up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapOptions {
    pub name: String,
    /// The host side's IPv4 address and netmask.
    pub ip: Option<(Ipv4Addr, Ipv4Addr)>,
    /// The interface's MTU (left as it is if `None`).
    pub mtu: Option<u32>,
    /// The vnet header's size on the tap (12: virtio_net_hdr_v1).
    pub vnet_hdr_len: i32,
}

/// Why a tap cannot be used: each names the interface and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap '{0}': not a usable interface name (1 to 15 bytes of letters, digits, '-', '_', '.')")]
    BadName(String),
    #[error("tap '{0}': {TUN_PATH} is missing (a kernel without CONFIG_TUN?)")]
    NoTunDevice(String),
    #[error("tap '{0}': not permitted (creating or attaching a tap needs CAP_NET_ADMIN: run as root)")]
    NotPermitted(String),
    #[error("tap '{0}': busy (another program has it open)")]
    Busy(String),
    #[error("tap '{0}': an interface of that name exists and is not a tap")]
    NotATap(String),
    #[error("tap '{name}': {call}: {errno}")]
    Call { name: String, call: &'static str, errno: Errno },
}

/// An open tap: packets are read and written as whole frames with a vnet header in front.
#[derive(Debug)]
pub struct Tap {
    file: File,
    pub name: String,
    /// yakvm created it (it disappears when `file` closes).
    pub created: bool,
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers, addresses and
    // a pointer): all zeroes is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let mut sa = libc::sockaddr { sa_family: libc::AF_INET as libc::sa_family_t, sa_data: [0; 14] };
    // sockaddr_in after the family: the port (2 bytes, 0), then the address.
    for (d, s) in sa.sa_data[2..6].iter_mut().zip(ip.octets()) {
        *d = s as libc::c_char;
    }
    sa
}

fn valid_name(name: &str) -> bool {
    (1..libc::IFNAMSIZ).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Tap {
    /// Opens (creating if needed) the tap `opts.name`, sets its vnet header's size, and
    /// configures and raises the interface.
    pub fn open(opts: &TapOptions) -> Result<Self, TapError> {
        let name = opts.name.clone();
        if !valid_name(&name) {
            return Err(TapError::BadName(name));
        }
        let call = |call: &'static str| {
            let name = name.clone();
            move |errno: Errno| TapError::Call { name, call, errno }
        };
        let existed = std::path::Path::new("/sys/class/net").join(&name).exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => TapError::NoTunDevice(name.clone()),
                io::ErrorKind::PermissionDenied => TapError::NotPermitted(name.clone()),
                _ => TapError::Call { name: name.clone(), call: "open /dev/net/tun", errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)) },
            })?;
        let mut req = ifreq(&name);
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF reads (and may write the name back into) the ifreq we own, for
        // the duration of the call; the descriptor is ours.
        unsafe { tun_set_iff(file.as_raw_fd(), &req) }.map_err(|errno| match errno {
            Errno::EPERM | Errno::EACCES => TapError::NotPermitted(name.clone()),
            Errno::EBUSY => TapError::Busy(name.clone()),
            Errno::EINVAL if existed => TapError::NotATap(name.clone()),
            e => TapError::Call { name: name.clone(), call: "TUNSETIFF", errno: e },
        })?;
        let hdr: libc::c_int = opts.vnet_hdr_len;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, which is a live local.
        unsafe { tun_set_vnet_hdr_sz(file.as_raw_fd(), &hdr) }.map_err(call("TUNSETVNETHDRSZ"))?;
        let tap = Self { file, name: name.clone(), created: !existed };
        let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(call("socket(AF_INET)"))?;
        if let Some((ip, mask)) = opts.ip {
            let mut req = ifreq(&name);
            req.ifr_ifru.ifru_addr = sockaddr_in(ip);
            // SAFETY: SIOCSIFADDR reads the ifreq (a local) during the call; `sock` is ours.
            unsafe { sioc_set_if_addr(sock.as_raw_fd(), &req) }.map_err(call("SIOCSIFADDR"))?;
            req.ifr_ifru.ifru_netmask = sockaddr_in(mask);
            // SAFETY: as above, SIOCSIFNETMASK.
            unsafe { sioc_set_if_netmask(sock.as_raw_fd(), &req) }.map_err(call("SIOCSIFNETMASK"))?;
        }
        if let Some(mtu) = opts.mtu {
            let mut req = ifreq(&name);
            req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
            // SAFETY: as above, SIOCSIFMTU.
            unsafe { sioc_set_if_mtu(sock.as_raw_fd(), &req) }.map_err(call("SIOCSIFMTU"))?;
        }
        set_up(&sock, &name).map_err(call("SIOCSIFFLAGS"))?;
        Ok(tap)
    }

    /// TUNSETOFFLOAD: the offloads (TUN_F_*) the reader of the tap (the guest) takes.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the descriptor is ours.
        unsafe { tun_set_offload(self.file.as_raw_fd(), flags as libc::c_int) }.map(drop).map_err(io::Error::from)
    }

    /// The descriptor to read and write frames on (non-blocking).
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn set_up(sock: &OwnedFd, name: &str) -> Result<(), Errno> {
    let mut req = ifreq(name);
    // SAFETY: SIOCGIFFLAGS writes the flags into the ifreq, a local, during the call.
    unsafe { sioc_get_if_flags(sock.as_raw_fd(), &mut req) }?;
    // SAFETY: SIOCGIFFLAGS just set ifru_flags (a c_short: every bit pattern is valid).
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq during the call.
    unsafe { sioc_set_if_flags(sock.as_raw_fd(), &req) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("yk0") && valid_name("tap-1.a_b"));
        assert!(!valid_name("") && !valid_name("a/b") && !valid_name("0123456789abcdef") && !valid_name("a b"));
        assert!(matches!(Tap::open(&TapOptions { name: "bad/name".into(), ip: None, mtu: None, vnet_hdr_len: 12 }), Err(TapError::BadName(_))));
    }

    #[test]
    fn addresses_are_laid_out_as_sockaddr_in() {
        let sa = sockaddr_in(Ipv4Addr::new(169, 254, 77, 1));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(sa.sa_data[..6].iter().map(|&b| b as u8).collect::<Vec<_>>(), [0, 0, 169, 254, 77, 1]);
    }

    /// Needs CAP_NET_ADMIN and /dev/net/tun (run by hand as root: `cargo test -p yakvm
    /// taps_come_and_go -- --ignored`; the image's net boot does the same through yakvm).
    #[test]
    #[ignore]
    fn taps_come_and_go() {
        let opts = TapOptions { name: "yktest0".into(), ip: Some((Ipv4Addr::new(169, 254, 99, 1), Ipv4Addr::new(255, 255, 255, 0))), mtu: Some(9000), vnet_hdr_len: 12 };
        let sys = std::path::Path::new("/sys/class/net/yktest0");
        assert!(!sys.exists());
        let tap = Tap::open(&opts).unwrap();
        assert!(tap.created && sys.exists());
        assert_eq!(std::fs::read_to_string(sys.join("mtu")).unwrap().trim(), "9000");
        assert!(std::fs::read_to_string(sys.join("flags")).unwrap().trim().parse::<String>().is_ok());
        assert!(matches!(Tap::open(&opts), Err(TapError::Busy(_))));
        assert!(tap.set_offload(0x07).is_ok());
        drop(tap);
        assert!(!sys.exists(), "a tap yakvm created goes with its descriptor");
        assert!(matches!(Tap::open(&TapOptions { name: "lo".into(), ..opts }), Err(TapError::NotATap(_))));
    }
}
