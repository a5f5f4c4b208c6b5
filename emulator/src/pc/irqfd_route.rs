//! A device's interrupt messages straight into the hypervisor's local APICs (KVM's irqfd
//! with an MSI route): one eventfd per MSI-X vector, bound to the message that vector
//! holds now (`hypervisor::Vm::register_irqfd`). A device thread that writes the eventfd
//! interrupts the guest with no emulator lock and no `SIGNAL_MSI` on the way: the module
//! delivers the message itself (`kmod/svm/irqfd.rs`).
//!
//! A vector is bound the first time it sends, and bound again when the guest has written
//! another message into its table entry since (a binding carries its message). The MSI-X
//! logic (masks, pending bits) stays where it is: only a message that is to be sent gets
//! here. When the hypervisor refuses a binding (KVM without the split irqchip, a module
//! out of bindings), [`IrqfdRoutes::signal`] says so and the caller sends the message the
//! ordinary way; a refusal is not retried for that vector.

use crate::hypervisor::VmHandle;
use std::io;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use yakvm_abi as abi;

/// One vector's binding.
enum Route {
    /// Nothing bound yet.
    Unbound,
    /// `fd` is bound to `msi`.
    Bound { msi: abi::Msi, fd: EventFd },
    /// The hypervisor refused: this vector's messages go the ordinary way.
    Refused,
}

/// The bindings of one device's vectors.
pub struct IrqfdRoutes {
    vm: VmHandle,
    routes: Vec<Route>,
    /// Messages sent through an eventfd, and bindings made.
    pub signalled: u64,
    pub bound: u64,
}

impl IrqfdRoutes {
    /// `vectors` unbound vectors on `vm`.
    pub fn new(vm: VmHandle, vectors: usize) -> Self {
        Self { vm, routes: (0..vectors).map(|_| Route::Unbound).collect(), signalled: 0, bound: 0 }
    }

    /// Sends `msi` for `vector` through its eventfd, binding it first if needed. `false`:
    /// not sent (no such vector, or no binding): the caller sends it the ordinary way.
    pub fn signal(&mut self, vector: usize, msi: abi::Msi) -> bool {
        let Some(fd) = self.bound_fd(vector, msi) else { return false };
        // A full counter (2^64 - 2 signals nobody took) cannot happen: the module takes
        // the count at each signal.
        if fd.write(1).is_err() {
            return false;
        }
        self.signalled += 1;
        true
    }

    /// The eventfd bound to `msi` for `vector`, binding it first if needed (for a device
    /// thread outside the emulator, vhost-net, to signal itself). `None`: no such vector,
    /// or no binding.
    pub fn bound_fd(&mut self, vector: usize, msi: abi::Msi) -> Option<&EventFd> {
        let route = self.routes.get_mut(vector)?;
        if !matches!(route, Route::Bound { msi: bound, .. } if *bound == msi) {
            if matches!(route, Route::Refused) {
                return None;
            }
            match bind(&self.vm, route, msi) {
                Ok(()) => self.bound += 1,
                Err(e) => {
                    if !matches!(route, Route::Refused) {
                        eprintln!("yakvm: an irqfd for interrupt vector {vector}: {e} (its interrupts go through the emulator)");
                    }
                    *route = Route::Refused;
                    return None;
                }
            }
        }
        match route {
            Route::Bound { fd, .. } => Some(fd),
            _ => None,
        }
    }
}

/// Replaces `route`'s binding with a new eventfd bound to `msi` (a fresh eventfd: a
/// signal on its way through the old binding delivers the old message, as on hardware a
/// message in flight when the table entry changed).
fn bind(vm: &VmHandle, route: &mut Route, msi: abi::Msi) -> io::Result<()> {
    if let Route::Bound { fd, .. } = std::mem::replace(route, Route::Unbound) {
        vm.unregister_irqfd(&fd)?;
    }
    let fd = EventFd::new(EFD_NONBLOCK)?;
    vm.register_irqfd(&fd, msi)?;
    *route = Route::Bound { msi, fd };
    Ok(())
}

impl Drop for IrqfdRoutes {
    fn drop(&mut self) {
        for route in &self.routes {
            if let Route::Bound { fd, .. } = route {
                // The VM may be gone first; its bindings go with it.
                let _ = self.vm.unregister_irqfd(fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{Datamatch, IoEventAddress, Vm};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    /// A VM that keeps its irqfd bindings (the eventfd's number, a copy of it, the
    /// message) and refuses new ones while `refuse` is set.
    #[derive(Default)]
    struct FakeVm {
        bound: Mutex<Vec<(i32, EventFd, abi::Msi)>>,
        refuse: AtomicBool,
    }

    impl FakeVm {
        fn messages(&self) -> Vec<abi::Msi> {
            self.bound.lock().unwrap().iter().map(|b| b.2).collect()
        }
        /// What the eventfd bound to `m` counted since the last look.
        fn taken(&self, m: abi::Msi) -> u64 {
            let bound = self.bound.lock().unwrap();
            let (_, fd, _) = bound.iter().find(|b| b.2 == m).expect("bound");
            fd.read().unwrap_or(0)
        }
    }

    impl Vm for FakeVm {
        fn register_ioevent(&self, _: IoEventAddress, _: Datamatch, _: &EventFd) -> io::Result<()> {
            unreachable!()
        }
        fn unregister_ioevent(&self, _: IoEventAddress, _: Datamatch, _: &EventFd) -> io::Result<()> {
            unreachable!()
        }
        fn register_irqfd(&self, fd: &EventFd, msi: abi::Msi) -> io::Result<()> {
            if self.refuse.load(Ordering::Relaxed) {
                return Err(io::Error::from_raw_os_error(nix::libc::ENXIO));
            }
            self.bound.lock().unwrap().push((fd.as_raw_fd(), fd.try_clone()?, msi));
            Ok(())
        }
        fn unregister_irqfd(&self, fd: &EventFd) -> io::Result<()> {
            let mut bound = self.bound.lock().unwrap();
            let before = bound.len();
            bound.retain(|b| b.0 != fd.as_raw_fd());
            assert_eq!(bound.len() + 1, before, "unbinding an eventfd that is not bound");
            Ok(())
        }
    }

    fn msi(vector: u8) -> abi::Msi {
        abi::Msi { address: 0xfee0_0000, data: vector.into(), _pad: 0 }
    }

    #[test]
    fn a_vector_binds_once_and_again_when_its_message_changes() {
        let vm = Arc::new(FakeVm::default());
        let mut routes = IrqfdRoutes::new(vm.clone(), 2);
        assert!(routes.signal(1, msi(0x41)));
        assert!(routes.signal(1, msi(0x41)));
        assert_eq!(vm.messages(), [msi(0x41)]);
        assert_eq!(vm.taken(msi(0x41)), 2);
        // The guest moved the vector: a new binding replaces the old.
        assert!(routes.signal(1, msi(0x42)));
        assert_eq!(vm.messages(), [msi(0x42)]);
        assert_eq!(vm.taken(msi(0x42)), 1);
        assert!(routes.signal(0, msi(0x41)));
        assert_eq!((routes.signalled, routes.bound), (4, 3));
        assert!(!routes.signal(2, msi(0x41)), "no vector 2");
        drop(routes);
        assert!(vm.messages().is_empty(), "every binding removed");
    }

    #[test]
    fn a_refused_binding_sends_the_ordinary_way_from_then_on() {
        let vm = Arc::new(FakeVm::default());
        vm.refuse.store(true, Ordering::Relaxed);
        let mut routes = IrqfdRoutes::new(vm.clone(), 1);
        assert!(!routes.signal(0, msi(0x41)));
        vm.refuse.store(false, Ordering::Relaxed);
        assert!(!routes.signal(0, msi(0x41)), "not retried");
        assert!(vm.messages().is_empty());
    }
}
