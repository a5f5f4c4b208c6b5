//! The yakvm emulator as a library: the `yakvm` command and the test programs use it.
//! All of its `unsafe` code is in `sys`; the other modules may not have any.

#[deny(unsafe_code)]
pub mod bare;
#[deny(unsafe_code)]
pub mod board;
#[deny(unsafe_code)]
pub mod boot;
#[deny(unsafe_code)]
pub mod bus;
#[deny(unsafe_code)]
pub mod cpu;
#[deny(unsafe_code)]
pub mod devices;
#[deny(unsafe_code)]
pub mod disk;
#[deny(unsafe_code)]
pub mod events;
/// The hypervisor under the machine: yakvm or KVM.
pub mod hypervisor;
/// `--ioeventfd`: ioeventfds counted by a thread (a test aid).
#[deny(unsafe_code)]
pub mod ioevent_probe;
/// `--irqfd`: an IRQFD signalled by a thread (a test aid).
#[deny(unsafe_code)]
pub mod irqfd_probe;
#[deny(unsafe_code)]
pub mod insn;
#[deny(unsafe_code)]
pub mod kernel;
#[deny(unsafe_code)]
pub mod layout;
#[deny(unsafe_code)]
pub mod loader;
#[deny(unsafe_code)]
pub mod machine;
#[deny(unsafe_code)]
pub mod mmu;
#[deny(unsafe_code)]
pub mod output;
#[deny(unsafe_code)]
pub mod pc;
#[deny(unsafe_code)]
pub mod run;
#[deny(unsafe_code)]
pub mod steptrace;
#[deny(unsafe_code)]
pub mod gdb;
#[deny(unsafe_code)]
pub mod virtio;
pub mod sys;
